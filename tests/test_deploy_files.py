"""Static checks of the container files: no Docker engine runs here, so lint and validate them."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _tool(name: str) -> str:
    path = shutil.which(name) or (str(Path(sys.executable).parent / name)
                                  if (Path(sys.executable).parent / name).exists() else None)
    if path is None:
        if os.environ.get("CI"):
            pytest.fail(f"{name} must be installed in CI (.ci/run installs it)")
        pytest.skip(f"{name} not installed")
    return path


def test_dockerfile_passes_hadolint():
    result = subprocess.run([_tool("hadolint"), "Dockerfile"], cwd=ROOT, capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def test_dockerfile_runs_as_non_root_with_healthcheck_and_one_worker():
    text = (ROOT / "Dockerfile").read_text()
    users = [line.split()[1] for line in text.splitlines() if line.startswith("USER ")]
    assert users and users[-1] not in {"root", "0"}
    assert "HEALTHCHECK" in text and "/healthz" in text
    assert "--workers" not in text  # one process per GPU: throughput comes from batching
    assert "nvidia/cuda" in text and "and-cuda" in text  # the GPU path is the default image


@pytest.mark.parametrize("compose_file", ["docker-compose.yml", "docker-compose.cpu.yml"])
def test_compose_files_validate(compose_file):
    result = subprocess.run([_tool("docker-compose"), "-f", compose_file, "config"], cwd=ROOT,
                            capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
    assert "healthcheck" in result.stdout and "/models" in result.stdout
    if compose_file == "docker-compose.yml":
        assert "capabilities" in result.stdout and "gpu" in result.stdout
