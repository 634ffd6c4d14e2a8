"""`pip install .` is the client: a fresh virtual environment gets httpx, numpy and Pillow, not
TensorFlow, FastAPI or the contract's dependencies, and its `aecodec` command talks to a live server.

Needs the package index (pip resolves the three dependencies; its cache makes reruns fast), as CI has.
"""

from __future__ import annotations

import io
import subprocess
import sys
import venv
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def base_env(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A venv with `pip install .` (no extras), built from a copy of the sources."""
    env = tmp_path_factory.mktemp("base-venv")
    venv.EnvBuilder(with_pip=True).create(env)
    python = env / "bin" / "python"
    result = subprocess.run([str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", str(ROOT)],
                            capture_output=True, text=True, timeout=900, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    return env


def _installed(env: Path) -> set[str]:
    out = subprocess.run([str(env / "bin" / "python"), "-m", "pip", "list", "--format=freeze"],
                         capture_output=True, text=True, check=True).stdout
    return {line.split("==")[0].lower().replace("_", "-") for line in out.splitlines() if "==" in line}


def test_the_base_install_has_no_server_and_no_tensorflow(base_env: Path):
    installed = _installed(base_env)
    assert {"aecodec", "httpx", "numpy", "pillow"} <= installed
    assert not installed & {"tensorflow", "tensorflow-cpu", "keras", "fastapi", "starlette", "uvicorn",
                            "pydantic", "constriction"}, installed
    probe = ("import importlib.util, aecodec; "
             "print(all(importlib.util.find_spec(m) is None for m in ('tensorflow', 'fastapi')))")
    out = subprocess.run([str(base_env / "bin" / "python"), "-c", probe], capture_output=True, text=True, check=False)
    assert out.returncode == 0 and out.stdout.strip() == "True", out.stderr


def test_the_base_installs_cli_round_trips_through_a_live_server(base_env: Path, server, tmp_path: Path):
    digit = np.zeros((28, 28), np.uint8)
    digit[6:22, 12:16] = 255
    source = tmp_path / "digit.png"
    Image.fromarray(digit).save(source)
    cli = str(base_env / "bin" / "aecodec")
    run = lambda *args: subprocess.run([cli, "--url", server.url, *args], capture_output=True, text=True,
                                       timeout=120, cwd=tmp_path, check=False)
    encoded = run("encode", str(source), "-o", "digit.aec")
    assert encoded.returncode == 0, encoded.stderr
    stream = (tmp_path / "digit.aec").read_bytes()
    assert stream[:3] == b"AEC"
    decoded = run("decode", "digit.aec", "-o", "back.png")
    assert decoded.returncode == 0, decoded.stderr
    back = Image.open(io.BytesIO((tmp_path / "back.png").read_bytes()))
    assert back.size == (28, 28)
    missing = run("encode", str(tmp_path / "nope.png"))
    assert missing.returncode == 1 and missing.stderr


def test_the_cli_runs_under_this_interpreter_too():
    """The same entry point from the dev install (`python -m aecodec`), for a quick sanity check."""
    out = subprocess.run([sys.executable, "-m", "aecodec", "--help"], capture_output=True, text=True, check=False)
    assert out.returncode == 0 and "encode" in out.stdout
