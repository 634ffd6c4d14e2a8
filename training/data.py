"""Datasets as train/val/test splits of float32 NHWC images in [0, 1], and tf.data pipelines over them.

Names: `mnist`, `fashion_mnist`, `cifar10` (Keras loaders: downloaded and cached on users' machines),
`idx:<dir>` (IDX files: a train/t10k pair, or a single t10k pair cut by `split`), and
`folder:<dir>[<slice>][=<weight>][,...]` (any images, or a slice of a folder's sorted images such as
`Urban100[0::2]`; fully convolutional models train on random
crops, each folder drawn with probability proportional to its weight, default 1, so that 111 PNGs are not
drowned by 3,800 JPEGs; JPEG files are downscaled by 2 on loading so that their 8×8 block artefacts
shrink below what the codec learns to reproduce).
Everything is deterministic for a given seed.
"""

from __future__ import annotations

import gzip
import re
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import numpy as np
import tensorflow as tf
from PIL import Image

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm"}


@dataclass
class Splits:
    """Images per split. Fixed-size sets are one array; folders of photos are lists of arrays."""

    name: str
    train: np.ndarray | list[np.ndarray]
    val: np.ndarray | list[np.ndarray]
    test: np.ndarray | list[np.ndarray]
    train_labels: np.ndarray | None = None
    val_labels: np.ndarray | None = None
    test_labels: np.ndarray | None = None
    notes: dict[str, str] = field(default_factory=dict)
    train_weights: list[float] | None = None  # photo folders: sampling weight of each training image
    # images that calibrate the anomaly threshold (and fit the complexity line); None: the validation
    # images (fixed-size sets, whose validation split only draws the training curves)
    calibration: np.ndarray | list[np.ndarray] | None = None
    # which images each split holds, in words (the card's `training.splits`), and for photo folders the
    # files of each held-out split (evaluation.json)
    sources: dict[str, str] = field(default_factory=dict)
    files: dict[str, list[str]] = field(default_factory=dict)

    @property
    def calibration_images(self) -> np.ndarray | list[np.ndarray]:
        return self.val if self.calibration is None else self.calibration

    @property
    def fixed_size(self) -> bool:
        return isinstance(self.train, np.ndarray)

    @property
    def channels(self) -> int:
        return int(self.train.shape[-1] if self.fixed_size else self.train[0].shape[-1])

    def image_shape(self) -> tuple[int | None, int | None, int]:
        if self.fixed_size:
            return tuple(int(d) for d in self.train.shape[1:])  # type: ignore[return-value]
        return (None, None, self.channels)


def load(spec: str, *, split: int | None = None, val_fraction: float = 0.1, seed: int = 0,
         classes: list[int] | None = None, test_spec: str | None = None, data_dir: Path | None = None) -> Splits:
    """Load a dataset by name. `classes` keeps only those labels in train/val (one-class training).

    With `data_dir`, the standard sets are read from local files instead of downloaded: IDX files for
    mnist/fashion_mnist, the extracted `cifar-10-batches-py` folder for cifar10.
    """
    kind, _, arg = spec.partition(":")
    if kind in {"mnist", "fashion_mnist"} and not arg and data_dir is not None:
        splits = _idx(Path(data_dir), split, val_fraction, seed)
    elif kind == "cifar10" and not arg and data_dir is not None:
        splits = _cifar_pickles(Path(data_dir), val_fraction, seed)
    elif kind in {"mnist", "fashion_mnist", "cifar10"} and not arg:
        splits = _keras(kind, val_fraction, seed)
    elif kind == "idx" and arg:
        splits = _idx(Path(arg), split, val_fraction, seed)
    elif kind == "folder" and arg:
        splits = _folder(arg, val_fraction, seed, hold_out_test=not test_spec)
    else:
        raise ValueError(
            f"unknown dataset {spec!r}: use mnist, fashion_mnist, cifar10, idx:<dir> or folder:<dir>[,<dir>...]"
        )
    if test_spec:
        test_kind, _, test_arg = test_spec.partition(":")
        if test_kind == "folder" and test_arg:
            images, _, paths = _folder_images(folder_parts(test_arg), downscale_jpeg=False, with_paths=True)
            splits.test, splits.test_labels = images, None
            splits.files["test"] = [str(p) for p in paths]
        else:
            other = load(test_spec, split=split, seed=seed)
            splits.test, splits.test_labels = other.test, other.test_labels
        splits.notes["test"] = test_spec
        splits.sources["test"] = f"{len(splits.test)} images of {test_spec} (the card's metrics)"
    if classes is not None:
        splits = _keep_classes(splits, classes)
    _describe_fixed(splits, val_fraction, seed)
    return splits


def _describe_fixed(splits: Splits, val_fraction: float, seed: int) -> None:
    """`sources` for the sets that are not photo folders (those describe themselves)."""
    if splits.sources.get("train"):
        return
    classes = f", classes {splits.notes['classes']}" if "classes" in splits.notes else ""
    splits.sources = {
        "train": f"{len(splits.train)} images of {splits.name}{classes}",
        "validation": f"{len(splits.val)} images of {splits.name}{classes} held out of training "
                      f"({val_fraction:g} drawn by seed {seed}; training curves)",
        "calibration": "the validation images (the anomaly threshold; no model or epoch is chosen on them)",
        **({"test": splits.sources["test"]} if "test" in splits.sources else
           {"test": f"{len(splits.test)} test images of {splits.name} (the card's metrics)"}),
    }


def _keras(name: str, val_fraction: float, seed: int) -> Splits:
    import keras

    loader = getattr(keras.datasets, name)
    (x_train, y_train), (x_test, y_test) = loader.load_data()
    x_train, x_test = _as_float(x_train), _as_float(x_test)
    train, val, y_tr, y_val = _split_val(x_train, y_train.reshape(-1), val_fraction, seed)
    return Splits(name, train, val, x_test, y_tr, y_val, y_test.reshape(-1))


def _as_float(images: np.ndarray) -> np.ndarray:
    images = images.astype(np.float32) / 255.0
    return images[..., None] if images.ndim == 3 else images


def _split_val(x: np.ndarray, y: np.ndarray | None, fraction: float, seed: int):
    order = np.random.default_rng(seed).permutation(len(x))
    n_val = max(1, round(len(x) * fraction))
    val_idx, train_idx = np.sort(order[:n_val]), np.sort(order[n_val:])
    pick = (lambda a, i: None if a is None else a[i])
    return x[train_idx], x[val_idx], pick(y, train_idx), pick(y, val_idx)


def read_idx(path: Path) -> np.ndarray:
    """Read an IDX file (optionally gzipped): the MNIST distribution format."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as fh:
        data = fh.read()
    if len(data) < 4 or data[0] != 0 or data[1] != 0:
        raise ValueError(f"{path} is not an IDX file")
    dtype = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}[data[2]]
    ndim = data[3]
    shape = struct.unpack(f">{ndim}I", data[4 : 4 + 4 * ndim])
    return np.frombuffer(data, dtype=dtype, offset=4 + 4 * ndim).reshape(shape)


def _idx(directory: Path, split: int | None, val_fraction: float, seed: int) -> Splits:
    if not directory.is_dir():
        raise ValueError(f"IDX directory {directory} does not exist")
    files = sorted(p for p in directory.iterdir() if "idx" in p.name)
    pick = lambda part, kind: next((p for p in files if part in p.name and kind in p.name), None)
    train_x, train_y = pick("train", "idx3"), pick("train", "idx1")
    test_x, test_y = pick("t10k", "idx3"), pick("t10k", "idx1")
    if test_x is None:
        raise ValueError(f"no t10k/test IDX image file in {directory}")
    x_test, y_test = _as_float(read_idx(test_x)), read_idx(test_y).astype(np.int64) if test_y else None
    if train_x is not None and split is None:
        x_train = _as_float(read_idx(train_x))
        y_train = read_idx(train_y).astype(np.int64) if train_y else None
        note = "train/t10k files"
    else:
        cut = split if split is not None else int(len(x_test) * 0.8)
        if not 0 < cut < len(x_test):
            raise ValueError(f"--split {cut} must be between 1 and {len(x_test) - 1}")
        x_train, y_train = x_test[:cut], None if y_test is None else y_test[:cut]
        x_test, y_test = x_test[cut:], None if y_test is None else y_test[cut:]
        note = f"first {cut} images for train/val, the remaining {len(x_test)} for test"
    train, val, y_tr, y_val = _split_val(x_train, y_train, val_fraction, seed)
    return Splits(f"idx:{directory}", train, val, x_test, y_tr, y_val, y_test, {"split": note})


JPEG_SUFFIXES = {".jpg", ".jpeg"}


class FolderPart(NamedTuple):
    """One folder of a `folder:` spec: its sampling weight and which of its (sorted) images it gives."""

    path: Path
    weight: float = 1.0
    pick: slice = slice(None)

    def __str__(self) -> str:
        text = str(self.path)
        if self.pick != slice(None):
            bounds = (self.pick.start, self.pick.stop) + ((self.pick.step,) if self.pick.step else ())
            text += "[" + ":".join("" if v is None else str(v) for v in bounds) + "]"
        return text if self.weight == 1 else f"{text}={self.weight:g}"


_PICK = re.compile(r"^(?P<path>.*?)\[(?P<start>-?\d*):(?P<stop>-?\d*)(?::(?P<step>-?\d*))?\]$")


def split_pick(text: str) -> tuple[Path, slice]:
    """`dir[start:stop:step]` → (dir, slice); a folder without brackets picks all its images."""
    match = _PICK.match(text)
    if not match:
        return Path(text), slice(None)
    bound = lambda key: int(match[key]) if match[key] else None
    if bound("step") is not None and bound("step") < 1:
        raise ValueError(f"the slice step in {text!r} must be a positive whole number")
    return Path(match["path"]), slice(bound("start"), bound("stop"), bound("step"))


def folder_parts(arg: str) -> list[FolderPart]:
    """`dir[[start:stop:step]][=weight],...` → [FolderPart]; weights default to 1 and must be positive.

    The slice picks images of the folder's sorted listing, as Python slices do, so that one collection
    can be split between training and measurement (`Urban100[0::2]` to train, `Urban100[1::2]` held out)
    without copying it."""
    parts = []
    for item in arg.split(","):
        path, _, weight = item.rpartition("=") if "=" in item else (item, "", "1")
        try:
            value = float(weight)
        except ValueError:
            raise ValueError(f"folder weight {weight!r} in {item!r} is not a number") from None
        if not value > 0:
            raise ValueError(f"folder weight in {item!r} must be positive")
        path, pick = split_pick(path)
        parts.append(FolderPart(path, value, pick))
    return parts


def folder_listing(path: Path, pick: slice = slice(None)) -> list[Path]:
    """The images of a folder (recursively, sorted by path) that `pick` selects: the one listing that
    training, the GPU pack and the benches slice, so that `DIR[0::2]` and `DIR[1::2]` are complements
    everywhere."""
    return sorted(p for p in path.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)[pick]


def load_image(path: Path, downscale_jpeg: bool = False) -> np.ndarray:
    """float32 [H, W, C] in [0, 1]; a JPEG halved in each dimension (box filter) when asked."""
    with Image.open(path) as img:
        img = img.convert("L" if img.mode in {"L", "I;16", "I", "1"} else "RGB")
        if downscale_jpeg and path.suffix.lower() in JPEG_SUFFIXES and min(img.size) >= 64:
            img = img.reduce(2)
        arr = np.asarray(img, dtype=np.float32) / 255.0
    return arr[..., None] if arr.ndim == 2 else arr


def _folder_images(folders: list[FolderPart], downscale_jpeg: bool = True, with_paths: bool = False):
    """Every image each folder picks (sorted per folder) and the folder index of each (and the paths)."""
    paths: list[Path] = []
    owner: list[int] = []
    for i, folder in enumerate(folders):
        if not folder.path.is_dir():
            raise ValueError(f"image folder {folder.path} does not exist")
        found = folder_listing(folder.path, folder.pick)
        paths += found
        owner += [i] * len(found)
    directories = [str(f) for f in folders]
    if len(paths) < 2:
        raise ValueError(f"need at least 2 images in {', '.join(map(str, directories))}")
    images = [load_image(p, downscale_jpeg) for p in paths]
    channels = max(img.shape[-1] for img in images)
    images = [np.repeat(img, channels, axis=-1) if img.shape[-1] != channels else img for img in images]
    return (images, owner, paths) if with_paths else (images, owner)


def split_order(n: int, seed: int) -> np.ndarray:
    """The draw behind a photo folder's splits: the first round(val_fraction · n) (at least 2) indices are
    held out (validation, calibration), the next as many the test split when there is one, the rest train."""
    return np.random.default_rng(seed).permutation(n)


def held_out_count(n: int, val_fraction: float) -> int:
    return max(2, round(n * val_fraction))


def _folder(arg: str, val_fraction: float, seed: int, hold_out_test: bool = True) -> Splits:
    """Train / validation / calibration / test, disjoint: round(`val_fraction` · N) images (at least 2)
    are held out and halved into validation (the training curves) and calibration (the anomaly
    threshold); without a test dataset as many again are the test split. The draw does not depend on
    `hold_out_test` for the held-out images, so a run keeps its training images when a test set is added."""
    parts = folder_parts(arg)
    directories = [str(part) for part in parts]
    images, owner, paths = _folder_images(parts, with_paths=True)
    n = len(images)
    n_held = held_out_count(n, val_fraction)
    n_test = n_held if hold_out_test else 0
    if n - n_held - n_test < 1:
        raise ValueError(f"{n} images in {', '.join(map(str, directories))} are too few for disjoint train, "
                         f"validation, calibration{' and test' if hold_out_test else ''} splits"
                         f"{': add images or give --test-dataset' if hold_out_test else ''}")
    order = split_order(n, seed)
    held = order[:n_held]
    parts_idx = {"validation": sorted(held[: (n_held + 1) // 2]), "calibration": sorted(held[(n_held + 1) // 2:]),
                 "test": sorted(order[n_held: n_held + n_test]), "train": sorted(order[n_held + n_test:])}
    pick = lambda key: [images[i] for i in parts_idx[key]]
    train_idx = parts_idx["train"]
    # each folder's weight shared among its training images
    per_folder = np.bincount([owner[i] for i in train_idx], minlength=len(parts))
    weights = [parts[owner[i]].weight / per_folder[owner[i]] for i in train_idx]
    name = "folder:" + ",".join(map(str, parts))
    notes = {"images": str(n)}
    if any(p.suffix.lower() in JPEG_SUFFIXES for p in paths):
        notes["jpeg"] = "JPEG files halved on loading"
    draw = f"drawn by seed {seed}"
    sources = {"train": f"{len(train_idx)} images of {name} ({draw})",
               "validation": f"{len(parts_idx['validation'])} held-out images of {name} ({draw}; training curves)",
               "calibration": f"{len(parts_idx['calibration'])} other held-out images of {name} "
                              f"({draw}; anomaly threshold)"}
    if hold_out_test:
        sources["test"] = f"{n_test} more held-out images of {name} ({draw}; the card's metrics)"
    files = {key: [str(paths[i]) for i in idx] for key, idx in parts_idx.items() if key != "train" and idx}
    # without a held-out test split the list is empty here: `load` puts the test dataset's images in it
    return Splits(name, pick("train"), pick("validation"), pick("test"), train_weights=weights, notes=notes,
                  calibration=pick("calibration"), sources=sources, files=files)


def _keep_classes(splits: Splits, classes: list[int]) -> Splits:
    if splits.train_labels is None:
        raise ValueError("--classes needs a labelled dataset")
    keep_tr = np.isin(splits.train_labels, classes)
    keep_val = np.isin(splits.val_labels, classes)
    splits.train, splits.train_labels = splits.train[keep_tr], splits.train_labels[keep_tr]
    splits.val, splits.val_labels = splits.val[keep_val], splits.val_labels[keep_val]
    splits.notes["classes"] = ",".join(map(str, classes))
    return splits


def train_dataset(splits: Splits, batch_size: int, seed: int, crop: int | None = None) -> tf.data.Dataset:
    """Shuffled, batched, prefetched training images; random crops (and flips) for photo folders."""
    if splits.fixed_size:
        ds = tf.data.Dataset.from_tensor_slices(splits.train)
        ds = ds.shuffle(min(len(splits.train), 10_000), seed=seed, reshuffle_each_iteration=True)
        return ds.batch(batch_size, drop_remainder=True).prefetch(tf.data.AUTOTUNE)
    if crop is None:
        raise ValueError("photo folders train on random crops: give a crop size")
    weights = splits.train_weights or [1.0] * len(splits.train)
    usable = [(img, w) for img, w in zip(splits.train, weights) if img.shape[0] >= crop and img.shape[1] >= crop]
    if not usable:
        raise ValueError(f"no training image is at least {crop}x{crop}")
    images = [img for img, _ in usable]
    probs = np.asarray([w for _, w in usable], np.float64)
    probs /= probs.sum()
    channels = images[0].shape[-1]
    rng = np.random.default_rng(seed)

    def crops():
        while True:
            img = images[rng.choice(len(images), p=probs)]
            y, x = rng.integers(img.shape[0] - crop + 1), rng.integers(img.shape[1] - crop + 1)
            patch = img[y : y + crop, x : x + crop]
            if rng.random() < 0.5:
                patch = patch[:, ::-1]
            yield np.ascontiguousarray(patch)

    ds = tf.data.Dataset.from_generator(crops, output_signature=tf.TensorSpec((crop, crop, channels), tf.float32))
    return ds.batch(batch_size, drop_remainder=True).prefetch(tf.data.AUTOTUNE)


def eval_batches(images: np.ndarray | list[np.ndarray], batch_size: int):
    """Yield evaluation batches: slices of a fixed-size array, or single photos of varying size."""
    if isinstance(images, np.ndarray):
        for start in range(0, len(images), batch_size):
            yield images[start : start + batch_size]
    else:
        for img in images:
            yield img[None]


def _cifar_pickles(directory: Path, val_fraction: float, seed: int) -> Splits:
    """CIFAR-10 from the extracted `cifar-10-batches-py` folder (what the Keras loader caches)."""
    import pickle

    def read(name: str) -> tuple[np.ndarray, np.ndarray]:
        with open(directory / name, "rb") as fh:
            batch = pickle.load(fh, encoding="bytes")
        x = batch[b"data"].reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
        return _as_float(x), np.asarray(batch[b"labels"], dtype=np.int64)

    parts = [read(f"data_batch_{i}") for i in range(1, 6)]
    x_train, y_train = np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])
    x_test, y_test = read("test_batch")
    train, val, y_tr, y_val = _split_val(x_train, y_train, val_fraction, seed)
    return Splits(f"cifar10:{directory}", train, val, x_test, y_tr, y_val, y_test)
