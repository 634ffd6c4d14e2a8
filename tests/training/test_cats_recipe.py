"""training/recipes/cats.py: the kitten data as the service would size it, in IDX order by cat number."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from contract.card import InputSpec
from training.data import read_idx
from training.recipes import cats


def _photo(path: Path, width: int, height: int, seed: int, orientation: int | None = None, mode: str = "RGB") -> None:
    rng = np.random.default_rng(seed)
    coarse = Image.fromarray(rng.integers(0, 256, (6, 8, 3), dtype=np.uint8)).resize((width, height), Image.BICUBIC)
    image = coarse.convert(mode)
    exif = Image.Exif()
    if orientation:
        exif[0x0112] = orientation
    image.save(path, format="JPEG", quality=90, exif=exif.tobytes())


def test_photos_are_the_pixels_the_service_feeds_a_48x48_model(tmp_path: Path):
    from service.inference import imaging

    spec = InputSpec(height=48, width=48, channels=3, size_policy="resize")
    for i, (w, h, orientation, mode) in enumerate([(320, 240, None, "RGB"), (200, 300, 6, "RGB"),
                                                   (150, 150, None, "L"), (48, 48, 3, "RGB")]):
        path = tmp_path / f"cat.{i}.jpg"
        _photo(path, w, h, seed=i, orientation=orientation, mode=mode)
        source = imaging.decode_image(imaging.open_image(path.read_bytes(), 10**8), 3)
        served = imaging.model_input(source, imaging.plan_size(source.height, source.width, spec), 3, as_float=False)
        ours = cats.model_pixels(path)
        assert ours.dtype == np.uint8 and ours.shape == (48, 48, 3)
        np.testing.assert_array_equal(ours, np.broadcast_to(served, ours.shape))


def test_prepare_writes_one_idx_file_in_cat_number_order(tmp_path: Path):
    source = tmp_path / "train"
    source.mkdir()
    for n in (10, 2, 1, 100):
        _photo(source / f"cat.{n}.jpg", 64, 48, seed=n)
    names = cats.prepare(source, tmp_path / "out", size=16)
    assert names == ["cat.1.jpg", "cat.2.jpg", "cat.10.jpg", "cat.100.jpg"]
    assert (tmp_path / "out" / cats.FILES_LIST).read_text().split() == names
    pixels = read_idx(tmp_path / "out" / cats.IMAGES_FILE)
    assert pixels.shape == (4, 16, 16, 3)
    np.testing.assert_array_equal(pixels[2], cats.model_pixels(source / "cat.10.jpg", 16))
    with pytest.raises(ValueError, match="cat.N.jpg"):
        cats.cat_number(Path("dog.1.jpg"))


def test_photos_at_gives_floats_of_the_same_pixels(tmp_path: Path):
    path = tmp_path / "x.png"
    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (90, 70, 3), dtype=np.uint8)).save(buffer, "PNG")
    path.write_bytes(buffer.getvalue())
    floats = cats.photos_at([path])
    assert floats.dtype == np.float32 and floats.shape == (1, 48, 48, 3)
    np.testing.assert_array_equal(np.round(floats[0] * 255).astype(np.uint8), cats.model_pixels(path))


def test_the_split_listing_names_the_images_training_uses(tmp_path: Path):
    from training import data

    source = tmp_path / "train"
    source.mkdir()
    for n in range(20):
        _photo(source / f"cat.{n}.jpg", 40, 30, seed=100 + n)
    names = cats.prepare(source, tmp_path / "out", size=8)
    pixels = read_idx(tmp_path / "out" / cats.IMAGES_FILE).astype(np.float32) / 255
    found = cats.split_files(names, split=15, val_fraction=0.2, seed=3)
    assert sorted(found["train"] + found["validation"], key=names.index) == names[:15]
    assert found["test"] == names[15:] and len(found["validation"]) == 3
    splits = data.load(f"idx:{tmp_path / 'out'}", split=15, val_fraction=0.2, seed=3)
    for part, images in (("train", splits.train), ("validation", splits.val), ("test", splits.test)):
        np.testing.assert_array_equal(images, pixels[[names.index(n) for n in found[part]]])
