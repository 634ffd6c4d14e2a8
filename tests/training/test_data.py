"""Photo folders: per-folder sampling weights and JPEGs halved on loading."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from training import data


def _folder(path: Path, n: int, size: tuple[int, int], suffix: str, value: int) -> Path:
    path.mkdir()
    for i in range(n):
        Image.fromarray(np.full((size[1], size[0], 3), value + i, np.uint8)).save(path / f"{i}{suffix}", quality=95)
    return path


def test_folder_weights_decide_how_often_each_folder_is_cropped(tmp_path: Path) -> None:
    few = _folder(tmp_path / "png", 4, (160, 160), ".png", 10)
    many = _folder(tmp_path / "jpg", 36, (320, 320), ".jpg", 200)
    splits = data.load(f"folder:{few}=3,{many}=1", val_fraction=0.1, seed=0)
    # JPEGs are halved on loading (320 → 160), PNGs kept as they are
    assert {img.shape[:2] for img in splits.train} == {(160, 160)}
    assert splits.notes["jpeg"] == "JPEG files halved on loading"
    crops = data.train_dataset(splits, batch_size=100, seed=0, crop=64).take(4)
    values = np.concatenate([b.numpy()[:, 0, 0, 0] for b in crops]) * 255
    share_png = float(np.mean(values < 100))
    assert 0.65 < share_png < 0.85, share_png  # 3 : 1 by weight, although PNGs are 1 in 10 of the images


@pytest.mark.parametrize(("suffix", "message"), [
    ("=lots", "not a number"), ("=0", "positive"),  # weights: positive numbers
    ("[::-1]", "positive whole number"), ("[::0]", "positive whole number"),  # slices: a positive step
])
def test_bad_folder_weights_and_slices_are_refused(tmp_path: Path, suffix: str, message: str) -> None:
    folder = _folder(tmp_path / "a", 4, (64, 64), ".png", 0)
    with pytest.raises(ValueError, match=message):
        data.load(f"folder:{folder}{suffix}")


def test_test_folders_are_not_downscaled(tmp_path: Path) -> None:
    train = _folder(tmp_path / "train", 3, (128, 128), ".png", 0)
    test = _folder(tmp_path / "test", 2, (256, 192), ".jpg", 50)
    splits = data.load(f"folder:{train}", test_spec=f"folder:{test}")
    assert {img.shape[:2] for img in splits.test} == {(192, 256)}


def test_a_slice_picks_images_of_a_folder_so_one_collection_splits_between_training_and_test(
        tmp_path: Path) -> None:
    folder = _folder(tmp_path / "photos", 10, (64, 64), ".png", 0)
    splits = data.load(f"folder:{folder}[0::2]", test_spec=f"folder:{folder}[1::2]", val_fraction=0.2)
    held_in = {Path(f).name for key in ("validation", "calibration") for f in splits.files[key]}
    trained = sorted(round(float(img[0, 0, 0]) * 255) for img in splits.train)
    assert [Path(f).name for f in splits.files["test"]] == ["1.png", "3.png", "5.png", "7.png", "9.png"]
    assert held_in | {f"{v}.png" for v in trained} == {"0.png", "2.png", "4.png", "6.png", "8.png"}
    assert splits.name == f"folder:{folder}[0::2]"
    weighted = data.load(f"folder:{folder}[:3]=2,{folder}[3:]", val_fraction=0.2)
    assert weighted.name == f"folder:{folder}[:3]=2,{folder}[3:]"
    assert weighted.notes["images"] == "10"


def test_the_gpu_pack_holds_training_images_only(tmp_path: Path) -> None:
    from training.gpu.pack import pack

    folder = _folder(tmp_path / "photos", 20, (140, 140), ".png", 0)
    splits = data.load(f"folder:{folder}", test_spec=f"folder:{folder}", val_fraction=0.2, seed=0)
    held = {Path(f).name for key in ("validation", "calibration") for f in splits.files[key]}
    index = pack(f"folder:{folder}", tmp_path / "pack", crop=128, max_mib=0.5, val_fraction=0.2)
    packed = {entry["source"] for entry in index["crops"]}
    assert len(held) == 4 and packed and not packed & held
    assert len(packed) > 10  # the other 16 images are drawn
