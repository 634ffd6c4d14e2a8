"""Stored streams keep decoding: one committed stream per shipped model version (and quality) under
tests/expected/golden/, made from a committed input, with the sha256 of its decoded pixels. Decoding
each with today's code must give those pixels bit for bit, and encoding the input again the very same
bytes. A change made to writer and reader alike (the bitstream layout, the entropy coder, a
`constriction` upgrade, the tables) passes every round-trip test and still breaks every stream users
have stored: this is the test that notices.

The encoding and decoding run in a process of their own with one fixed TensorFlow configuration
(tests/helpers/golden_worker.py). What must hold everywhere is that a stream entropy-decodes to the
symbols it was written with (the integer entropy parameters make that portable; `natural` version 8's
float ones are not, see models_store/README.md "Portable streams"). Pixels come out of a float synthesis
transform and a fresh stream out of a float analysis one, so they are bit-exact only on the platform
(TensorFlow build, CPU instruction set) the golden files were made on; elsewhere the pixels must stay
within one level of the committed ones and a fresh stream within 2% of the committed length.
A missing golden file is a failure. To write them anew (a deliberate format change):

    AEC_REGENERATE_GOLDEN=1 .venv/bin/python -m pytest tests/test_golden_streams.py

and for a new shipped model (add its cases to `golden_worker.CASES`), only the cases not yet committed,
each recording the platform it was made on (the others keep theirs: their streams are what users stored):

    AEC_REGENERATE_GOLDEN=missing .venv/bin/python -m pytest tests/test_golden_streams.py
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from golden_worker import CASES, MANIFEST, ROOT, Case, environment
from PIL import Image

REGENERATE = os.environ.get("AEC_REGENERATE_GOLDEN", "")  # "1": every case; "missing": the uncommitted ones
HOW = ("AEC_REGENERATE_GOLDEN=missing writes it for a new model (=1 rewrites every case: only for a "
       "deliberate format change)")


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict]:
    """The worker's encodes and decodes of every case (run once for the module)."""
    out = tmp_path_factory.mktemp("golden")
    command = [sys.executable, str(Path(__file__).parent / "helpers" / "golden_worker.py"), str(out)]
    subprocess.run(command + (["--write-inputs"] if REGENERATE == "1" else []), cwd=ROOT, env=environment(),
                   check=True, timeout=900)
    report = json.loads((out / "results.json").read_text())
    found = report["cases"]
    for case in CASES:
        found[case.id]["pixels_dir"] = str(out)
    found["__platform__"] = report["platform"]
    if REGENERATE in ("1", "missing"):
        old = json.loads(MANIFEST.read_text()) if REGENERATE == "missing" and MANIFEST.exists() else {}
        manifest = old or {"__platform__": report["platform"]}
        for case in CASES:
            if case.id in old and case.stream_path.exists():
                continue
            shutil.copyfile(out / f"{case.id}.aec", case.stream_path)
            shutil.copyfile(out / f"{case.id}.fresh.png", case.pixels_path)
            fresh = found[case.id]
            assert "error" not in fresh["fresh"], f"{case.id}: a fresh stream does not decode: {fresh['fresh']}"
            platform = {"platform": report["platform"]} if old else {}
            manifest[case.id] = {"model": case.model, "version": case.version, "quality": case.quality,
                                 "input": case.input, "bytes": fresh["bytes"],
                                 "stream_sha256": fresh["stream_sha256"], **fresh["fresh"], **platform}
            found[case.id]["committed"] = fresh["fresh"]
        MANIFEST.write_text(json.dumps(manifest, indent=1) + "\n")
    return found


def _manifest() -> dict:
    if not MANIFEST.exists():
        pytest.fail(f"missing {MANIFEST.relative_to(ROOT)}: {HOW}")
    return json.loads(MANIFEST.read_text())


def _same_platform(results: dict, case: Case) -> bool:
    """Whether this machine is the one the case's golden files were made on (bit-exact floats expected):
    the case's own platform, or the manifest's for the cases written together."""
    manifest = _manifest()
    return manifest.get(case.id, {}).get("platform", manifest.get("__platform__")) == results["__platform__"]


def _portable(case: Case) -> bool:
    """Streams whose entropy parameters are integers decode to the same symbols on every platform."""
    return not (case.model == "natural" and case.version <= 8)


def _expected(case: Case) -> dict:
    expected = _manifest().get(case.id)
    if expected is None:
        pytest.fail(f"{case.id} is not in {MANIFEST.relative_to(ROOT)}: {HOW}")
    if not case.stream_path.exists():
        pytest.fail(f"missing {case.stream_path.relative_to(ROOT)}: {HOW}")
    return expected


def test_every_shipped_model_version_has_a_golden_case() -> None:
    shipped = {(p.parent.name, int(p.name)) for p in (ROOT / "models_store").glob("*/*")
               if p.name.isdigit() and (p / "model.json").exists()}
    assert shipped == {(case.model, case.version) for case in CASES}


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_committed_stream_decodes_bit_exactly(case: Case, results: dict[str, dict]) -> None:
    expected = _expected(case)
    assert hashlib.sha256(case.stream_path.read_bytes()).hexdigest() == expected["stream_sha256"], (
        f"{case.stream_path.name} is not the stream the manifest describes")
    decoded = results[case.id]["committed"]
    same = _same_platform(results, case)
    if not same and not _portable(case) and ("error" in decoded or
                                             decoded["symbols_sha256"] != expected["symbols_sha256"]):
        pytest.xfail(f"{case.id} has float entropy parameters: its streams are not portable across platforms")
    if "error" in decoded:
        pytest.fail(f"{case.stream_path.name} no longer decodes: {decoded['error']}")
    assert decoded["symbols_sha256"] == expected["symbols_sha256"], (
        "the stream no longer entropy-decodes to the symbols it was written with: the bitstream format, "
        "the entropy coder or the model's tables changed")
    assert decoded["shape"] == expected["shape"]
    if same:
        assert decoded["pixels_sha256"] == expected["pixels_sha256"], (
            "the symbols decode as before but the pixels differ: the synthesis transform or its numerics changed")
        return
    got = np.asarray(Image.open(Path(results[case.id]["pixels_dir"]) / f"{case.id}.committed.png"), np.int16)
    want = np.asarray(Image.open(case.pixels_path), np.int16)
    assert got.shape == want.shape
    diff = np.abs(got - want)
    assert diff.max() <= 1 and np.mean(diff > 0) <= 0.01, (
        f"pixels differ by up to {diff.max()} levels ({np.mean(diff > 0):.2%} of them) on this platform: more "
        "than float rounding in the synthesis transform explains")


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_encoding_the_input_again_gives_the_same_bytes(case: Case, results: dict[str, dict]) -> None:
    expected = _expected(case)
    fresh = results[case.id]
    if _same_platform(results, case):
        assert (fresh["bytes"], fresh["stream_sha256"]) == (expected["bytes"], expected["stream_sha256"]), (
            f"encoding {case.input} with {case.model}/{case.version} now writes another stream")
        return
    if _portable(case):
        assert "error" not in fresh["fresh"], fresh["fresh"]
    assert abs(fresh["bytes"] - expected["bytes"]) <= max(2, 0.02 * expected["bytes"]), (
        f"encoding {case.input} now writes {fresh['bytes']} bytes, the golden stream has {expected['bytes']}")
