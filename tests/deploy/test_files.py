"""Static checks of the container files (they run everywhere; the real engine runs them in
tests/deploy/test_docker_compose.py under `make docker-test`): hadolint, compose validation, and what
the issue that made them asked for, so a later edit cannot quietly undo it."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml
from packaging.markers import default_environment
from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[2]
TENSORFLOWS = {"tensorflow", "tensorflow-cpu", "tensorflow-gpu", "tensorflow-intel"}


def _tool(name: str) -> str:
    path = shutil.which(name) or (str(Path(sys.executable).parent / name)
                                  if (Path(sys.executable).parent / name).exists() else None)
    if path is None:
        if os.environ.get("CI"):
            pytest.fail(f"{name} must be installed in CI (.ci/run installs it)")
        pytest.skip(f"{name} not installed")
    return path


def _stages(text: str) -> dict[str, str]:
    """Dockerfile stage name -> its text."""
    parts = re.split(r"^FROM ", text, flags=re.MULTILINE)
    return {re.search(r"AS (\S+)", p.splitlines()[0]).group(1): p for p in parts[1:]}


DOCKERFILE = (ROOT / "Dockerfile").read_text()
STAGES = _stages(DOCKERFILE)


def test_dockerfile_passes_hadolint():
    result = subprocess.run([_tool("hadolint"), "Dockerfile"], cwd=ROOT, capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def test_api_is_the_default_target_non_root_ready_checked_and_one_worker():
    assert list(STAGES)[-1] == "api"  # `docker build .` gives the service
    api = STAGES["api"]
    users = [line.split()[1] for line in api.splitlines() if line.startswith("USER ")]
    assert users and users[-1].split(":")[0] not in {"root", "0"}
    assert "HEALTHCHECK" in api and "aec-healthcheck" in api
    assert "/readyz" in (ROOT / "deploy" / "docker" / "healthcheck.py").read_text()  # readiness, not liveness
    assert "--workers" not in DOCKERFILE  # one process per GPU: throughput comes from batching


def test_no_cuda_base_image_and_no_syntax_line():
    """CUDA and cuDNN come once, as tensorflow[and-cuda]'s wheels: a CUDA base image would add them again.
    No `# syntax=` line: BuildKit would pull a frontend image, which an offline build cannot."""
    assert "nvidia/cuda" not in DOCKERFILE
    assert not DOCKERFILE.startswith("# syntax")
    assert re.search(r"^ARG BASE_IMAGE=debian:bookworm-slim$", DOCKERFILE, re.MULTILINE)


def test_wheels_and_build_tools_stay_in_the_venv_stage():
    for stage in ("api", "train"):
        assert "/wheelhouse" not in STAGES[stage] and "pip install" not in STAGES[stage]
        assert "COPY --from=venv /opt/venv /opt/venv" in STAGES[stage]
    assert "${PIP_OFFLINE:+--no-index}" in STAGES["venv"]
    assert not re.search(r"^COPY (service|training)", STAGES["venv"], re.MULTILINE)  # code edits keep the venv cached
    assert "COPY training" not in STAGES["api"] and "COPY training" in STAGES["train"]
    assert "one_tensorflow.py" in STAGES["venv"]  # the build fails with two TensorFlows


def _extra_requirements(extras: list[str]) -> list[Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    reqs = [Requirement(r) for r in project["dependencies"]]
    for extra in extras:
        reqs += [Requirement(r) for r in project["optional-dependencies"][extra]]
    return reqs


@pytest.mark.parametrize("extras", [["service", "cpu"], ["service", "gpu"], ["train", "cpu"], ["train", "gpu"],
                                    ["service", "train", "cpu"]])
def test_each_install_has_exactly_one_tensorflow_on_linux_x86_64(extras):
    env = {**default_environment(), "sys_platform": "linux", "platform_machine": "x86_64"}
    tensorflows = [r for r in _extra_requirements(extras)
                   if r.name in TENSORFLOWS and (r.marker is None or r.marker.evaluate(env))]
    assert len(tensorflows) == 1, tensorflows
    if "gpu" in extras:
        assert tensorflows[0].name == "tensorflow" and "and-cuda" in tensorflows[0].extras


def test_the_base_install_is_the_client_only():
    """`pip install .` brings httpx, numpy and Pillow: no TensorFlow, no server, no contract deps."""
    assert sorted(r.name.lower() for r in _extra_requirements([])) == ["httpx", "numpy", "pillow"]


def _compose(name: str) -> dict:
    result = subprocess.run([_tool("docker-compose"), "-f", name, "config"], cwd=ROOT,
                            capture_output=True, text=True, check=False,
                            env={k: v for k, v in os.environ.items() if not k.startswith("AEC_")})
    assert result.returncode == 0, result.stderr
    return yaml.safe_load(result.stdout)


@pytest.mark.parametrize("compose_file", ["docker-compose.yml", "docker-compose.cpu.yml"])
def test_compose_files(compose_file):
    config = _compose(compose_file)
    api, train = config["services"]["api"], config["services"]["train"]
    gpu = compose_file == "docker-compose.yml"
    assert api["build"]["target"] == "api" and train["build"]["target"] == "train"
    assert api["build"]["args"]["EXTRAS"] == ("service,gpu" if gpu else "service,cpu")
    assert train["build"]["args"]["EXTRAS"] == ("train,gpu" if gpu else "train,cpu")
    assert api["image"] != train["image"]  # the API image carries no training extras
    # The models read-only for the API, read-write for training.
    assert any(v.endswith(":/models:ro") for v in api["volumes"])
    assert any(v.endswith(":/app/models_store:rw") for v in train["volumes"])
    # Readiness in the healthcheck, and a grace period longer than the drain.
    assert "aec-healthcheck" in " ".join(api["healthcheck"]["test"])
    drain = int(api["environment"]["AEC_SHUTDOWN_TIMEOUT_S"])
    grace = api["stop_grace_period"]
    assert grace.endswith("s") and int(grace[:-1]) > drain, (grace, drain)
    assert train["user"] == "10001:10001" and train["profiles"] == ["train"]
    assert api["ports"][0].startswith("127.0.0.1:")  # not on every interface unless AEC_BIND says so
    reservations = [s.get("deploy", {}).get("resources", {}).get("reservations", {}) for s in (api, train)]
    assert all(("devices" in r) == gpu for r in reservations)


def test_dockerignore_keeps_the_context_small():
    ignore = (ROOT / ".dockerignore").read_text().splitlines()
    assert "*" in ignore  # a whitelist: everything out, then what the build copies
    for needed in ("!pyproject.toml", "!contract", "!service", "!training", "!models_store", "!deploy/docker", "!wheelhouse"):
        assert needed in ignore
    copied = set(re.findall(r"^COPY (?!--from)(\S+)", DOCKERFILE, re.MULTILINE))
    assert copied <= {"wheelhouse/", "pyproject.toml", "contract", "service", "training", "models_store",
                      "deploy/docker/requirements.py", "deploy/docker/train_entrypoint.py",
                      "deploy/docker/healthcheck.py"}, copied
