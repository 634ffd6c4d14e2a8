"""`aecodec` / `python -m aecodec` against the live fixture server: files in, files out."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image
from service_helpers import ROOT, to_bytes

from aecodec.cli import main


@pytest.fixture()
def photo(tmp_path, model_store):
    path = tmp_path / "digit.png"
    path.write_bytes(to_bytes(model_store.normal[0]))
    return path


def test_encode_decode_reconstruct_score_models(server, photo, tmp_path, capsys) -> None:
    url = ["--url", server.url]
    assert main([*url, "encode", str(photo), "-o", str(tmp_path / "d.aec")]) == 0
    out = capsys.readouterr().out
    stream = (tmp_path / "d.aec").read_bytes()
    assert stream[:3] == b"AEC" and f"{len(stream)} B" in out and "bpp" in out and "tiny v1" in out

    assert main(["decode", str(tmp_path / "d.aec"), "-o", str(tmp_path / "out.png"), *url]) == 0
    decoded = Image.open(tmp_path / "out.png")
    assert decoded.size == (28, 28) and decoded.format == "PNG"

    assert main([*url, "reconstruct", str(photo), "-o", str(tmp_path / "r.png"), "--json"]) == 0
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert report["psnr"] > 10 and report["mse"] > 0 and report["model"] == "tiny"
    # decode(encode(x)) is the reconstruction: the round trip in files equals the one-call path.
    assert np.array_equal(np.asarray(decoded), np.asarray(Image.open(tmp_path / "r.png")))

    assert main([*url, "score", str(photo), "--heatmap", str(tmp_path / "h.png")]) == 0
    assert "normal (score" in capsys.readouterr().out
    assert Image.open(tmp_path / "h.png").size == (28, 28)

    assert main([*url, "models"]) == 0
    listing = capsys.readouterr().out
    assert "tiny*" in listing and "tiny-reject" in listing and "keras_cae" in listing


def test_default_output_names_and_model_option(server, photo, capsys) -> None:
    assert main(["--url", server.url, "encode", str(photo), "--model", "tiny-reject"]) == 0
    assert "tiny-reject v1" in capsys.readouterr().out
    assert photo.with_suffix(".aec").exists()
    assert main(["--url", server.url, "decode", str(photo.with_suffix(".aec")), "--format", "webp"]) == 0
    assert Image.open(photo.with_suffix(".png")).format == "WEBP"


def test_errors_exit_1_with_the_service_code(server, photo, tmp_path, capsys) -> None:
    assert main(["--url", server.url, "encode", str(photo), "--model", "../etc"]) == 1
    assert "model_not_found" in capsys.readouterr().err
    (tmp_path / "junk.aec").write_bytes(b"junk")
    assert main(["--url", server.url, "decode", str(tmp_path / "junk.aec")]) == 1
    assert "corrupt_bitstream" in capsys.readouterr().err
    assert main(["--url", "http://127.0.0.1:9", "models"]) == 1
    assert "connection_failed" in capsys.readouterr().err
    assert main(["--url", server.url, "encode", str(tmp_path / "missing.png")]) == 1


def test_module_entry_point_and_env_fallback(server, photo) -> None:
    env = {**os.environ, "AEC_URL": server.url, "PYTHONPATH": str(ROOT)}
    result = subprocess.run([sys.executable, "-m", "aecodec", "score", str(photo), "--json"],
                            capture_output=True, text=True, env=env, cwd=photo.parent, timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["is_anomaly"] is False
    assert "tensorflow" not in subprocess.run(
        [sys.executable, "-c", "import sys, aecodec; print(' '.join(sys.modules))"],
        capture_output=True, text=True, env=env, timeout=120, check=True).stdout  # the client stays light
