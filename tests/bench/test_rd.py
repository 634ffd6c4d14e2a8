"""bench/bdrate.py against known cases, and bench/rd.py end to end on two tiny synthetic images."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from bench import bdrate, rd
from bench.rdlib import curves
from bench.rdlib.classic import parse_qualities
from bench.rdlib.ours import quality_steps, select_models
from bench.rdlib.tables import render_every_image_table

RATES = np.array([0.12, 0.25, 0.5, 1.0, 2.0])
PSNRS = np.array([26.0, 28.5, 31.0, 33.8, 36.9])


@pytest.mark.parametrize("method", ["pchip", "cubic"])
def test_a_curve_needing_20_percent_fewer_bits_has_bd_rate_minus_20(method: str) -> None:
    assert bdrate.bd_rate(RATES, PSNRS, RATES * 0.8, PSNRS, method=method) == pytest.approx(-20.0, abs=1e-9)
    assert bdrate.bd_rate(RATES, PSNRS, RATES * 1.5, PSNRS, method=method) == pytest.approx(50.0, abs=1e-9)
    # Restricted to 0.25-1.0 bpp: still exactly the same factor.
    ranged = bdrate.bd_rate(RATES, PSNRS, RATES * 0.8, PSNRS, method=method, rate_range=(0.25, 1.0))
    assert ranged == pytest.approx(-20.0, abs=1e-9)


def test_rate_range_limits_the_psnr_interval() -> None:
    """The test curve saves 50% below 0.5 bpp and nothing from 0.5 up: the BD-rate over 1-2 bpp (where the
    interpolants coincide) is 0, over 0.5-2 bpp close to 0, over the whole range clearly negative."""
    test_rates = np.where(RATES < 0.5, RATES * 0.5, RATES)
    full = bdrate.bd_rate(RATES, PSNRS, test_rates, PSNRS)
    assert full is not None and full < -10
    assert bdrate.bd_rate(RATES, PSNRS, test_rates, PSNRS, rate_range=(1.0, 2.0)) == pytest.approx(0.0, abs=1e-9)
    assert abs(bdrate.bd_rate(RATES, PSNRS, test_rates, PSNRS, rate_range=(0.5, 2.0))) < 2


def test_bd_rate_and_bd_psnr_match_the_reference_implementation() -> None:
    """Values from FAU-LMS/bjontegaard 1.x (whose PCHIP matches the JCT-VC CTC Excel sheet) on its own
    example (libx265 presets) and on the classic VCEG-M33 four-point example."""
    r1, p1 = [9487.76, 4593.60, 2486.44, 1358.24], [40.037, 38.615, 36.845, 34.851]
    r2, p2 = [9787.80, 4469.00, 2451.52, 1356.24], [40.121, 38.651, 36.970, 34.987]
    assert bdrate.bd_rate(r1, p1, r2, p2, method="pchip") == pytest.approx(-4.417485350589, abs=1e-7)
    assert bdrate.bd_rate(r1, p1, r2, p2, method="cubic") == pytest.approx(-4.420462706026, abs=1e-7)
    assert bdrate.bd_psnr(r1, p1, r2, p2, method="pchip") == pytest.approx(0.119692785425, abs=1e-8)
    r1, p1 = [686.76, 309.58, 157.11, 85.95], [40.28, 37.18, 34.24, 31.42]
    r2, p2 = [893.34, 407.8, 204.93, 112.75], [40.39, 37.21, 34.17, 31.24]
    assert bdrate.bd_rate(r1, p1, r2, p2, method="pchip") == pytest.approx(31.379878202398, abs=1e-7)
    assert bdrate.bd_rate(r1, p1, r2, p2, method="cubic") == pytest.approx(31.397374054909, abs=1e-7)
    assert bdrate.bd_psnr(r1, p1, r2, p2, method="cubic") == pytest.approx(-1.184897921770, abs=1e-8)


def test_bd_psnr_of_a_curve_one_db_better() -> None:
    assert bdrate.bd_psnr(RATES, PSNRS, RATES, PSNRS + 1.0) == pytest.approx(1.0, abs=1e-9)


def test_no_bd_rate_without_a_shared_psnr_range_or_enough_points() -> None:
    assert bdrate.bd_rate(RATES, PSNRS, RATES, PSNRS - 20.0) is None
    assert bdrate.bd_rate(RATES, PSNRS, [0.5], [31.0]) is None
    assert bdrate.bd_rate(RATES, PSNRS, RATES[:3], PSNRS[:3], method="cubic") is None  # cubic needs 4
    assert bdrate.bd_rate(RATES, PSNRS, RATES * 0.8, PSNRS, rate_range=(3.0, 4.0)) is None


def test_frontier_and_interpolation_at_a_rate() -> None:
    r, p = bdrate.frontier([0.5, 0.1, 0.3, 0.4, 0.3, 0.0, 0.6], [30, 20, 27, 26, 25, 99, math.inf])
    assert r.tolist() == [0.1, 0.3, 0.5] and p.tolist() == [20, 27, 30]  # dominated, zero-rate, inf dropped
    assert bdrate.psnr_at([0.1, 0.3, 0.5], [20, 27, 30], 0.2) == pytest.approx(23.5)
    assert bdrate.psnr_at([0.1, 0.3, 0.5], [20, 27, 30], 0.05) is None
    assert bdrate.psnr_at([0.1, 0.3, 0.5], [20, 27, 30], 0.6) is None
    # extended: the line through the two nearest frontier points, on either side
    assert bdrate.psnr_at([0.1, 0.3, 0.5], [20, 27, 30], 0.05, extrapolate=True) == pytest.approx(18.25)
    assert bdrate.psnr_at([0.1, 0.3, 0.5], [20, 27, 30], 0.6, extrapolate=True) == pytest.approx(31.5)
    assert bdrate.psnr_at([0.1], [20], 0.2, extrapolate=True) is None


def test_quality_lists() -> None:
    assert parse_qualities("1-10:4") == [1, 5, 9, 10]
    assert parse_qualities("90,10,50-52") == [10, 50, 51, 52, 90]


def test_summaries_of_several_operating_points() -> None:
    """Two images, three operating points: PSNR at a target per image then averaged, n/a outside a
    curve's range, and BD-rate on the mean curves (here exactly 20% fewer bits than the anchor)."""
    def points(key: str, scale: float) -> dict[str, list[dict]]:
        return {
            "a.png": [{key: k, "bpp": r * scale, "psnr": p} for k, r, p in zip("xyz", [0.2, 0.4, 0.8], [30, 33, 36])],
            "b.png": [{key: k, "bpp": r * scale, "psnr": p} for k, r, p in zip("xyz", [0.3, 0.6, 1.2], [28, 31, 34])],
        }
    ours, anchor = points("model", 0.8), points("quality", 1.0)
    at = curves.psnr_at_targets(curves.image_curves(anchor), [0.25, 0.5, 1.0])
    assert [(e["images"], e["of"]) for e in at] == [(1, 2), (2, 2), (1, 2)]
    assert at[0]["mean_psnr"] == pytest.approx(30.75) and at[2]["mean_psnr"] == pytest.approx(33.0)
    assert at[1]["mean_psnr"] == pytest.approx((33.75 + 30.0) / 2)
    # over every image: b.png's curve starts at 0.3 bpp, so at 0.25 it is read off the line through
    # (0.3, 28) and (0.6, 31): 27.5; a.png's curve ends at 0.8, so at 1.0 it reads 36 + 0.2 * 7.5
    assert [e["extrapolated"] for e in at] == [1, 0, 1]
    assert at[0]["mean_psnr_all"] == pytest.approx((30.75 + 27.5) / 2)
    assert at[1]["mean_psnr_all"] == pytest.approx(at[1]["mean_psnr"])
    assert at[2]["mean_psnr_all"] == pytest.approx((37.5 + 33.0) / 2)
    assert "29.12 (1 extrap.)" in render_every_image_table([{"label": "x", "psnr_at": at}], [0.25, 0.5, 1.0])
    mean = curves.mean_curve(ours, "model")
    assert [c["model"] for c in mean] == ["x", "y", "z"] and mean[0]["bpp"] == pytest.approx(0.2)
    bd = curves.bd_pair(curves.mean_curve(anchor, "quality"), mean, "pchip")
    assert bd["full"] == pytest.approx(-20.0) and bd["0.25-1.0"] == pytest.approx(-20.0)
    assert curves.per_image_bd(anchor, ours, "pchip")["full"] == {"mean": pytest.approx(-20.0), "images": 2, "of": 2}
    # on the mean curve every image counts: (0.25, 29) and (0.5, 32) are its first points, so 0.25 reads
    # 29 where the per-image mean above (only the image that reaches 0.25) reads 30.75
    on_mean = curves.psnr_on_mean_curve(curves.mean_curve(anchor, "quality"), [0.1, 0.25, 0.375, 1.0])
    assert [e["psnr"] for e in on_mean] == [None, pytest.approx(29.0), pytest.approx(30.5), pytest.approx(35.0)]


def _write_images(folder: Path) -> None:
    folder.mkdir()
    for (h, w), seed in (((40, 56), 0), ((17, 33), 1)):
        rng = np.random.default_rng(seed)
        coarse = Image.fromarray(rng.integers(0, 256, size=(3, 4, 3), dtype=np.uint8))
        coarse.resize((w, h), Image.Resampling.BICUBIC).save(folder / f"smooth-{w}x{h}.png")
    (folder / "notes.txt").write_text("not an image: skipped")


def test_model_selection_by_name_glob_and_prefix(model_store) -> None:
    names = lambda spec: [p.name for p in select_models(model_store.path, spec)]
    assert names("tiny") == ["tiny"]
    assert names("tiny-") == ["tiny-reject"]
    assert set(names("tiny*")) == {"tiny", "tiny-reject"}
    with pytest.raises(SystemExit):
        select_models(model_store.path, "no-such-model")


def test_end_to_end_on_two_small_images(model_store, tmp_path: Path, capsys) -> None:
    images = tmp_path / "images"
    _write_images(images)
    out_json, out_png = tmp_path / "rd.json", tmp_path / "rd.png"
    code = rd.main([
        str(images), "--models-dir", str(model_store.path), "--models", model_store.codec,
        "--qualities", "10,30,50,70,90", "--avif-qualities", "20,60", "--no-cache", "--quiet",
        "--json", str(out_json), "--plot", str(out_png),
    ])
    assert code == 0
    table = capsys.readouterr().out
    rows = {line.split("|")[1].strip() for line in table.splitlines() if line.startswith("| ")}
    assert {f"ours ({model_store.codec}/1)", "JPEG", "WebP", "AVIF"} <= rows
    assert "BD vs JPEG" in table and "enc s/MP" in table and "PSNR on the mean curves" in table
    assert out_png.stat().st_size > 1000 and out_png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    doc = json.loads(out_json.read_text())
    assert [(i["width"], i["height"]) for i in doc["images"]] == [(33, 17), (56, 40)]
    assert doc["unreadable"] == ["notes.txt"]
    for image in doc["images"]:
        (ours,) = image["ours"]
        assert ours["model"] == model_store.codec and ours["bytes"] > 0
        assert ours["bpp"] == pytest.approx(ours["bytes"] * 8 / (image["width"] * image["height"]))
        assert math.isfinite(ours["psnr"]) and ours["psnr"] > 0
        assert ours["enc_s_per_mp"] > 0 and ours["dec_s_per_mp"] > 0
        for codec in ("jpeg", "webp"):
            assert [p["quality"] for p in image[codec]] == [10, 30, 50, 70, 90]
            assert all(p["bpp"] > 0 and math.isfinite(p["psnr"]) for p in image[codec])
    row = {r["codec"]: r for r in doc["table"]}
    assert row["jpeg"]["bd"]["jpeg"]["full"] == pytest.approx(0.0, abs=1e-9)
    assert row["ours"]["enc_s_per_mp"] > 0


def test_a_variable_rate_model_is_swept_over_its_qualities(variable_rate_store, tmp_path: Path, capsys) -> None:
    assert quality_steps(1, 2, 0.5) == [1.0, 1.5, 2.0]
    images = tmp_path / "images"
    _write_images(images)
    out_json = tmp_path / "rd.json"
    assert rd.main([str(images), "--models-dir", str(variable_rate_store), "--models", "codec-vr",
                    "--codecs", "jpeg", "--qualities", "20,80", "--no-cache", "--quiet", "--json", str(out_json)]) == 0
    doc = json.loads(out_json.read_text())
    assert "| codec-vr/2 q1.5 | 0.0122474 |" in capsys.readouterr().out  # λ interpolated in log between levels
    assert [m["name"] for m in doc["models"]] == ["codec-vr@q1", "codec-vr@q1.5", "codec-vr@q2"]
    assert [m["version"] for m in doc["models"]] == [2, 2, 2]  # the newest version
    for image in doc["images"]:
        points = image["ours"]
        assert [p["quality"] for p in points] == [1.0, 1.5, 2.0]
        assert points[0]["bytes"] <= points[1]["bytes"] <= points[2]["bytes"]
    assert rd.main([str(images), "--models-dir", str(variable_rate_store), "--models", "codec-vr",
                    "--our-qualities", "1.25,9", "--codecs", "jpeg", "--qualities", "50", "--no-cache", "--quiet",
                    "--json", str(out_json)]) == 0
    assert [m["quality"] for m in json.loads(out_json.read_text())["models"]] == [1.25]  # 9 is out of range


def test_two_versions_of_a_model_get_a_curve_each(variable_rate_store, tmp_path: Path, capsys) -> None:
    images = tmp_path / "images"
    _write_images(images)
    out_json = tmp_path / "rd.json"
    assert rd.main([str(images), "--models-dir", str(variable_rate_store), "--models", "codec-vr/1,codec-vr/2",
                    "--codecs", "jpeg", "--qualities", "20,50,80", "--no-cache", "--quiet",
                    "--json", str(out_json)]) == 0
    out = capsys.readouterr().out
    rows = {line.split("|")[1].strip() for line in out.splitlines() if line.startswith("| ")}
    assert {"ours (codec-vr/1)", "ours (codec-vr/2)", "JPEG"} <= rows
    assert "BD-rate of ours (codec-vr/2) vs ours (codec-vr/1)" in out
    doc = json.loads(out_json.read_text())
    for image in doc["images"]:
        assert [p["version"] for p in image["ours:codec-vr/1"]] == [1, 1, 1]
        assert [p["version"] for p in image["ours:codec-vr/2"]] == [2, 2, 2]
    with pytest.raises(SystemExit, match="no version"):
        select_models(variable_rate_store, "codec-vr/7")


def test_ms_ssim_curves_and_bd_rate_over_ms_ssim_db() -> None:
    """Mean MS-SSIM curves use only the points that have one (classic sweeps measure a subset), in dB,
    and a curve needing 20% fewer bits for the same MS-SSIM has a BD-rate over MS-SSIM of -20%."""
    def points(key: str, scale: float) -> dict[str, list[dict]]:
        out = {}
        for name, rates in (("a.png", [0.2, 0.4, 0.8, 1.6]), ("b.png", [0.3, 0.6, 1.2, 2.4])):
            values = [0.9, 0.95, 0.98, 0.99]
            out[name] = [{key: k, "bpp": r * scale, "psnr": 30.0 + i, "ms_ssim": v,
                          "ms_ssim_db": -10 * math.log10(1 - v)} for i, (k, r, v) in enumerate(zip("wxyz", rates, values))]
        out["small.png"] = [{key: k, "bpp": 9.0, "psnr": 40.0, "ms_ssim": None, "ms_ssim_db": None} for k in "wxyz"]
        return out
    ours, anchor = points("model", 0.8), points("quality", 1.0)
    curve = curves.ms_ssim_mean_curve(anchor, "quality")
    assert [c["n"] for c in curve] == [2, 2, 2, 2]  # small.png has no MS-SSIM and no say in the bpp either
    assert curve[0]["bpp"] == pytest.approx(0.25) and curve[0]["ms_ssim_db"] == pytest.approx(10.0)
    bd = curves.bd_pair(curve, curves.ms_ssim_mean_curve(ours, "model"), "pchip", "ms_ssim_db")
    assert bd["full"] == pytest.approx(-20.0)
    assert curves.ms_ssim_mean_curve({"a.png": [{"quality": 1, "bpp": 1.0, "psnr": 30.0}]}, "quality") == []
    from bench.rdlib.classic import ms_ssim_qualities

    assert ms_ssim_qualities(list(range(1, 101)), 5) == set(range(1, 101, 5)) | {100}
    assert ms_ssim_qualities([10, 20], 0) == set()


def test_end_to_end_ms_ssim_on_images_big_enough(model_store, tmp_path: Path, capsys) -> None:
    images = tmp_path / "images"
    images.mkdir()
    for (h, w), seed in (((176, 168), 0), ((161, 200), 1)):
        rng = np.random.default_rng(seed)
        coarse = Image.fromarray(rng.integers(0, 256, size=(6, 6, 3), dtype=np.uint8))
        coarse.resize((w, h), Image.Resampling.BICUBIC).save(images / f"big-{w}x{h}.png")
    out_json, cache = tmp_path / "rd.json", tmp_path / "cache"
    common = [str(images), "--models-dir", str(model_store.path), "--models", model_store.codec, "--codecs",
              "jpeg,webp", "--qualities", "10,30,50,70,90", "--cache", str(cache), "--quiet", "--json", str(out_json)]
    assert rd.main([*common, "--ms-ssim-stride", "0"]) == 0  # fills the cache without MS-SSIM
    assert "MS-SSIM: not measured" in capsys.readouterr().out
    assert rd.main([*common, "--ms-ssim-stride", "2"]) == 0  # the cached points gain it
    out = capsys.readouterr().out
    assert "MS-SSIM on the mean curves" in out and "BD(MS-SSIM) vs JPEG" in out and "mean MS-SSIM" in out
    doc = json.loads(out_json.read_text())
    for image in doc["images"]:
        (ours,) = image["ours"]
        assert 0 < ours["ms_ssim"] < 1 and ours["ms_ssim_db"] == pytest.approx(-10 * math.log10(1 - ours["ms_ssim"]))
        jpeg = {p["quality"]: p["ms_ssim"] for p in image["jpeg"]}
        assert {q for q, v in jpeg.items() if v is not None} == {10, 50, 90}  # every 2nd quality and the last
        assert jpeg[10] < jpeg[50] < jpeg[90]
    row = {r["codec"]: r for r in doc["table"]}
    assert row["jpeg"]["bd_ms_ssim"]["jpeg"]["full"] == pytest.approx(0.0, abs=1e-9)
    assert "webp" in row["ours"]["bd_ms_ssim"] and len(doc["ms_ssim_mean_curves"]["jpeg"]) == 3
    cached = json.loads(next(cache.glob("*-jpeg.json")).read_text())
    assert all(len(v) == 3 for q, v in next(iter(cached.values())).items() if int(q) in (10, 50, 90))


def test_a_folder_slice_picks_the_same_images_as_training_does(tmp_path: Path) -> None:
    from bench.rdlib.images import list_images
    from training.data import _folder_images, folder_parts

    for i in range(6):
        Image.fromarray(np.full((8, 8, 3), i, np.uint8)).save(tmp_path / f"img_{i}.png")
    (tmp_path / "notes.txt").write_text("not an image")  # a stray file must not shift the slices
    assert [p.name for p in list_images([f"{tmp_path}[1::2]"])] == ["img_1.png", "img_3.png", "img_5.png"]
    held_out = list_images([f"{tmp_path}[1::2]"])
    trained = _folder_images(folder_parts(f"{tmp_path}[0::2]"), with_paths=True)[2]
    assert sorted(held_out + trained) == sorted(tmp_path.glob("*.png")) and not set(held_out) & set(trained)
    assert len(list_images([str(tmp_path)])) == 7  # a plain folder: every file (rd.py says which it skips)
    with pytest.raises(SystemExit, match="neither a folder nor a file"):
        list_images([f"{tmp_path}/missing[::2]"])
