"""The CPU images under a real Docker engine, driven by docker compose as a user drives them
(`make docker-test` builds the images first, then runs this module with AEC_DOCKER_TEST=1).

One stack for the module: `docker compose -f docker-compose.cpu.yml up -d api` on a free loopback
port, then, in order:
1. healthy within the start period (the healthcheck probes readiness), timed;
2. every README `curl` example against it whose input files exist (encode, decode, reconstruct,
   anomaly-score, the 4xx errors), outputs compared with the README's;
3. the process runs as uid 10001, not root, and /models is a read-only mount (writing fails);
4. the API image has exactly one TensorFlow and no training extras; the train image has them;
5. the train service refuses, within seconds and before importing TensorFlow, a store it cannot write,
   and trains and exports into one it can;
6. last: `docker compose stop` (SIGTERM) while a slow request is in flight: the request completes with
   200, a new connection is refused, and the container exits by itself well inside stop_grace_period.
The stack is torn down (`down -v`) whatever happens. Figures go to build/docker-test/figures.json.
"""

from __future__ import annotations

import io
import json
import math
import os
import re
import shlex
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = "docker-compose.cpu.yml"
API_IMAGE = os.environ.get("AEC_API_IMAGE", "aecodec:cpu")
TRAIN_IMAGE = os.environ.get("AEC_TRAIN_IMAGE", "aecodec:cpu-train")
EXAMPLES = ROOT / "examples"
DATASETS = Path(os.environ.get("AEC_DATASETS", ROOT.parent / "shared" / "datasets"))
FIGURES = ROOT / "build" / "docker-test" / "figures.json"
HEALTHY_WITHIN_S = 180  # the healthcheck's start_period (120 s) plus three intervals and some slack
GRACE_S = 40  # stop_grace_period in the compose file
TRAIN_EXTRAS = ("sklearn", "matplotlib", "tensorboard", "scipy", "tqdm")
#: README JSON keys not compared with the README: when the server started, and /readyz's counts, which
#: change whenever a model version ships (checked against the mounted store instead).
VOLATILE = {"since", "models", "versions"}

pytestmark = pytest.mark.skipif(
    not os.environ.get("AEC_DOCKER_TEST"), reason="needs a Docker engine and the built images: make docker-test")


def _compose_command() -> list[str]:
    """`docker compose` (v2 plugin) where it exists, else Debian's `docker-compose` (1.29)."""
    if subprocess.run(["docker", "compose", "version"], capture_output=True, check=False).returncode == 0:
        return ["docker", "compose"]
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    pytest.fail("neither `docker compose` nor `docker-compose` is installed")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _run(args: list[str], env: dict[str, str] | None = None, timeout: float = 300, check: bool = True,
         cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False)
    if check and result.returncode != 0:
        raise AssertionError(f"{shlex.join(args)} exited {result.returncode}\n{result.stdout}\n{result.stderr}")
    return result


@dataclass
class Stack:
    compose: list[str]
    env: dict[str, str]
    port: int
    container: str = ""
    figures: dict[str, float | str] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def compose_run(self, *args: str, env: dict[str, str] | None = None, timeout: float = 300,
                    check: bool = True) -> subprocess.CompletedProcess[str]:
        return _run([*self.compose, "-f", COMPOSE_FILE, *args], env={**self.env, **(env or {})},
                    timeout=timeout, check=check)

    def inspect(self, template: str) -> str:
        return _run(["docker", "inspect", "--format", template, self.container]).stdout.strip()


@pytest.fixture(scope="module")
def stack() -> Iterator[Stack]:
    port = _free_port()
    env = {**os.environ, "COMPOSE_PROJECT_NAME": f"aecodec-test-{os.getpid()}", "AEC_PORT": str(port),
           "AEC_BIND": "127.0.0.1", "AEC_MODELS_HOST_DIR": str(ROOT / "models_store"),
           "AEC_DEFAULT_MODEL": "mnist", "AEC_API_KEYS": ""}
    for key in ("AEC_SHUTDOWN_TIMEOUT_S", "AEC_STOP_GRACE_PERIOD", "AEC_UID", "AEC_GID"):
        env.pop(key, None)  # the compose file's defaults are what is under test
    stack = Stack(_compose_command(), env, port)
    started = time.monotonic()
    try:
        stack.compose_run("up", "-d", "--no-build", "api")
        stack.container = stack.compose_run("ps", "-q", "api").stdout.strip()
        assert stack.container, "compose started no api container"
        ready_at = None
        while time.monotonic() - started < HEALTHY_WITHIN_S:
            if ready_at is None:
                try:
                    if httpx.get(f"{stack.url}/readyz", timeout=2).status_code == 200:
                        ready_at = time.monotonic() - started
                except httpx.HTTPError:
                    pass
            health = stack.inspect("{{.State.Health.Status}}")
            if health == "healthy":
                break
            assert stack.inspect("{{.State.Status}}") == "running", stack.compose_run("logs", "api").stdout[-4000:]
            time.sleep(0.5)
        stack.figures.update(time_to_ready_s=round(ready_at or math.nan, 1),
                             time_to_healthy_s=round(time.monotonic() - started, 1), health=health)
        yield stack
    finally:
        logs = stack.compose_run("logs", "--no-color", "api", check=False).stdout
        (FIGURES.parent).mkdir(parents=True, exist_ok=True)
        (FIGURES.parent / "api.log").write_text(logs)
        stack.compose_run("--profile", "train", "down", "-v", "--remove-orphans", "--timeout", "5", check=False)
        for image in (API_IMAGE, TRAIN_IMAGE):
            size = _run(["docker", "image", "inspect", "--format", "{{.Size}}", image], check=False).stdout.strip()
            if size.isdigit():
                stack.figures[f"image_size_mb[{image}]"] = round(int(size) / 1e6)
        previous = json.loads(FIGURES.read_text()) if FIGURES.exists() else {}
        FIGURES.write_text(json.dumps({**previous, **stack.figures}, indent=2) + "\n")
        print("\ndocker-test figures:", json.dumps(stack.figures, indent=2))


# ---- 1. healthy -----------------------------------------------------------------------------------
def test_healthy_means_ready(stack: Stack) -> None:
    assert stack.figures["health"] == "healthy", stack.inspect("{{json .State.Health}}")
    assert httpx.get(f"{stack.url}/readyz", timeout=5).json()["status"] == "ready"
    log = json.loads(stack.inspect("{{json .State.Health.Log}}"))
    assert '"status":"ready"' in log[-1]["Output"]  # the probe read /readyz, not /healthz


# ---- 2. the README's curl examples ------------------------------------------------------------------
@dataclass
class Example:
    command: str
    expected: str


def readme_examples() -> list[Example]:
    """Every `$ curl ...` line (with its continuation lines) of the README's console blocks that talks
    to localhost:8000, with the output the README shows under it."""
    examples = []
    for block in re.findall(r"```console\n(.*?)```", (ROOT / "README.md").read_text(), re.DOTALL):
        lines, i = block.splitlines(), 0
        while i < len(lines):
            if not lines[i].startswith("$ "):
                i += 1
                continue
            command = lines[i][2:]
            while command.endswith("\\") and i + 1 < len(lines):
                i += 1
                command += "\n" + lines[i]
            i += 1
            output = []
            while i < len(lines) and not lines[i].startswith("$ "):
                output.append(lines[i])
                i += 1
            if "localhost:8000" in command:
                examples.append(Example(command, "\n".join(output)))
    return examples


def _close(expected: str, actual: str) -> bool:
    if expected == actual:
        return True
    try:
        return math.isclose(float(expected), float(actual), rel_tol=1e-4, abs_tol=1e-7)
    except ValueError:
        return False


def _same_json(expected, actual, where: str = "$") -> list[str]:
    """Differences of `actual` from the README's JSON: every key the README shows, with its value
    (numbers within 1e-5); keys the README leaves out are fine (a response may gain fields)."""
    if isinstance(expected, dict) and isinstance(actual, dict):
        missing = sorted(set(expected) - set(actual))
        if missing:
            return [f"{where}: keys {missing} missing"]
        return [d for k in expected if k not in VOLATILE or not isinstance(expected[k], int | str)
                for d in _same_json(expected[k], actual[k], f"{where}.{k}")]
    if isinstance(expected, list) and isinstance(actual, list):
        if len(expected) != len(actual):
            return [f"{where}: {len(actual)} items, README shows {len(expected)}"]
        return [d for n, (e, a) in enumerate(zip(expected, actual, strict=True)) for d in _same_json(e, a, f"{where}[{n}]")]
    if isinstance(expected, float | int) and isinstance(actual, float | int) and not isinstance(expected, bool):
        return [] if math.isclose(expected, actual, rel_tol=1e-5, abs_tol=1e-9) else [f"{where}: {actual} != {expected}"]
    return [] if expected == actual else [f"{where}: {actual!r} != {expected!r}"]


def _split_response(text: str) -> tuple[str, dict[str, str], str]:
    """(status line, headers with lower-case names, body) of `curl -D -` / `-i` output, or of the
    README's rendering of it (there the headers are abridged and no blank line precedes the body)."""
    lines = text.replace("\r\n", "\n").split("\n")
    status, headers, n = lines[0], {}, 1
    while n < len(lines) and re.match(r"^[\w-]+: ", lines[n]):
        name, value = lines[n].split(": ", 1)
        headers[name.lower()] = value
        n += 1
    return status, headers, "\n".join(lines[n:]).strip()


def _differences(example: Example, stdout: str) -> list[str]:
    """What differs between the README's output for `example` and the real one (empty: they agree).
    Headers: every one the README shows, with its value (numbers within 1e-4); JSON: equal, numbers
    within 1e-5; abridged output (`...`, `| grep`): the same opening."""
    expected = example.expected.strip()
    actual = stdout.strip()
    if not expected:
        return [] if actual or "-o " in example.command else ["no output"]
    if expected.startswith("HTTP/"):
        e_status, e_headers, e_body = _split_response(expected)
        a_status, a_headers, a_body = _split_response(actual)
        problems = [] if a_status.split()[:2] == e_status.split()[:2] else [f"status {a_status!r} != {e_status!r}"]
        for name, value in e_headers.items():
            if name not in a_headers:
                problems.append(f"header {name} missing")
            elif not _close(value, a_headers[name]):
                problems.append(f"header {name}: {a_headers[name]!r} != {value!r}")
        if e_body:
            problems += _differences(Example(example.command, e_body), a_body)
        return problems
    if "..." not in expected and "| grep" not in example.command:
        try:
            return _same_json(json.loads(expected), json.loads(actual))
        except json.JSONDecodeError:
            e_tokens, a_tokens = expected.split(), actual.split()
            if len(e_tokens) == len(a_tokens) and all(_close(e, a) for e, a in zip(e_tokens, a_tokens, strict=True)):
                return []
            return [f"output {actual[:300]!r} != {expected[:300]!r}"]
    if "| grep" in example.command:  # metric lines: every series the README shows (values change with traffic)
        series = [line.rsplit(" ", 1)[0] for line in expected.splitlines() if line.strip()]
        return [f"series {s} missing" for s in series if s not in actual]
    # Abridged JSON (`...`): every complete "key":value the README shows must be in the answer.
    fragments = [m.group(0) for m in re.finditer(r'"([\w-]+)":("(?:[^"\\]|\\.)*"|-?[\d.eE+-]+|true|false|null)', expected)
                 if m.group(1) not in VOLATILE and "..." not in m.group(2)]
    assert fragments, f"nothing to compare in {expected!r}"
    return [f"{f} not in the answer ({actual[:200]!r}...)" for f in fragments if f not in actual]


def test_readme_curl_examples(stack: Stack, tmp_path: Path) -> None:
    digits = sorted(EXAMPLES.glob("digit-*.png"))
    assert digits, "examples/digit-*.png missing: `make examples` writes them (make docker-test runs it)"
    (tmp_path / "examples").mkdir()
    for path in [*EXAMPLES.glob("*.png")]:
        shutil.copy(path, tmp_path / path.name)
        shutil.copy(path, tmp_path / "examples" / path.name)
    shutil.copy(ROOT / "README.md", tmp_path / "README.md")

    ran, skipped, problems = [], [], []
    for example in readme_examples():
        made = set(re.findall(r"(?:>|-o) *([\w./-]+)", example.command))  # files the command writes itself
        needs = [n for n in re.findall(r"@([\w./-]+)", example.command) if n not in made]
        if any(not (tmp_path / name).exists() for name in needs):
            skipped.append(example.command.splitlines()[0])  # e.g. photo.png (a McMaster photo, not shipped)
            continue
        command = example.command.replace("localhost:8000", f"127.0.0.1:{stack.port}")
        result = _run(["bash", "-o", "pipefail", "-c", command], cwd=tmp_path, check=False, timeout=120)
        ran.append(example.command.splitlines()[0])
        if result.returncode != 0:
            problems.append(f"$ {example.command}\n  exited {result.returncode}: {result.stderr[-500:]}")
            continue
        for problem in _differences(example, result.stdout):
            problems.append(f"$ {example.command}\n  {problem}")
    endpoints = {e for c in ran for e in ("/encode", "/decode", "/reconstruct", "/anomaly-score") if e in c}
    assert endpoints == {"/encode", "/decode", "/reconstruct", "/anomaly-score"}, ran
    assert sum("model=nope" in c or "README.md" in c or "truncated" in c for c in ran) == 3  # the 4xx examples
    stack.figures["readme_examples_run"] = len(ran)
    stack.figures["readme_examples_skipped"] = len(skipped)
    assert not problems, "\n".join(problems)
    decoded = Image.open(tmp_path / "digit-7.out.png")
    assert decoded.size == (28, 28)
    store = ROOT / "models_store"
    versions = [v for m in store.iterdir() if m.is_dir() for v in m.iterdir() if v.is_dir() and v.name.isdigit()]
    ready = httpx.get(f"{stack.url}/readyz", timeout=5).json()
    assert (ready["models"], ready["versions"]) == (len({v.parent for v in versions}), len(versions))


# ---- 3. non-root, read-only models -----------------------------------------------------------------
def test_runs_as_non_root_with_read_only_models(stack: Stack) -> None:
    uid = _run(["docker", "exec", stack.container, "sh", "-c", "awk '/^Uid:/ {print $2}' /proc/1/status"]).stdout
    assert uid.strip() == "10001"
    mounts = json.loads(stack.inspect("{{json .Mounts}}"))
    models = [m for m in mounts if m["Destination"] == "/models"]
    assert len(models) == 1 and models[0]["RW"] is False, mounts
    write = _run(["docker", "exec", stack.container, "touch", "/models/mnist/should-not-exist"], check=False)
    assert write.returncode != 0 and "Read-only file system" in write.stderr
    assert not (ROOT / "models_store" / "mnist" / "should-not-exist").exists()


# ---- 4. what is in the images ----------------------------------------------------------------------
_PROBE = ("import importlib.metadata as m, importlib.util as u, json, re;"
          "names = {re.sub(r'[-_.]+', '-', d.metadata['Name']).lower(): d.version for d in m.distributions()};"
          "print(json.dumps({'tensorflow': sorted(n for n in names if n in ('tensorflow', 'tensorflow-cpu')),"
          f"'extras': [x for x in {TRAIN_EXTRAS!r} if u.find_spec(x)]}}))")


@pytest.mark.parametrize(("image", "with_extras"), [(API_IMAGE, False), (TRAIN_IMAGE, True)])
def test_one_tensorflow_and_training_extras_only_in_the_train_image(image: str, with_extras: bool) -> None:
    found = json.loads(_run(["docker", "run", "--rm", "--entrypoint", "python", image, "-c", _PROBE]).stdout)
    assert found["tensorflow"] == ["tensorflow-cpu"]
    assert found["extras"] == (list(TRAIN_EXTRAS) if with_extras else [])


# ---- 5. the train service ----------------------------------------------------------------------------
def _train_env(tmp_path: Path) -> dict[str, str]:
    store, runs = tmp_path / "store", tmp_path / "runs"
    store.mkdir(exist_ok=True)
    runs.mkdir(exist_ok=True)
    return {"AEC_MODELS_HOST_DIR": str(store), "AEC_RUNS_HOST_DIR": str(runs), "AEC_DATA_HOST_DIR": str(DATASETS)}


TRAIN_ARGS = ["train", "--model", "conv_ae", "--dataset", "idx:/data/mnist-t10k", "--split", "8000",
              "--epochs", "1", "--steps-per-epoch", "3", "--batch-size", "32", "--name", "compose-smoke",
              "--skip-bitstreams", "--no-progress"]


def test_train_refuses_an_unwritable_store_at_once(stack: Stack, tmp_path: Path) -> None:
    env = _train_env(tmp_path)  # folders owned by root, mode 755: uid 10001 cannot write them
    os.chmod(env["AEC_MODELS_HOST_DIR"], 0o755)
    started = time.monotonic()
    result = stack.compose_run("--profile", "train", "run", "--rm", "-T", "train", *TRAIN_ARGS, env=env,
                               check=False, timeout=120)
    took = time.monotonic() - started
    stack.figures["train_refusal_s"] = round(took, 1)
    assert result.returncode == 73, result.stdout + result.stderr
    assert "cannot write /app/models_store" in result.stderr and "uid 10001" in result.stderr
    assert "AEC_UID" in result.stderr  # says how to fix it
    assert took < 30  # no TensorFlow import, no training: the refusal comes first
    assert list(Path(env["AEC_MODELS_HOST_DIR"]).iterdir()) == []


def test_train_exports_into_a_writable_store(stack: Stack, tmp_path: Path) -> None:
    if not (DATASETS / "mnist-t10k" / "t10k-images-idx3-ubyte.gz").exists():
        pytest.fail(f"no MNIST IDX files under {DATASETS} (shared/datasets/mnist-t10k)")
    env = _train_env(tmp_path)
    for folder in ("AEC_MODELS_HOST_DIR", "AEC_RUNS_HOST_DIR"):
        os.chown(env[folder], 10001, 10001)  # what the error message tells an operator to do
    started = time.monotonic()
    result = stack.compose_run("--profile", "train", "run", "--rm", "-T", "train", *TRAIN_ARGS, env=env,
                               check=False, timeout=600)
    stack.figures["train_smoke_s"] = round(time.monotonic() - started, 1)
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
    version = Path(env["AEC_MODELS_HOST_DIR"]) / "compose-smoke" / "1"
    assert (version / "saved_model.pb").exists() and (version / "model.json").exists()
    assert version.stat().st_uid == 10001


# ---- 6. SIGTERM with a request in flight (last: it stops the stack) --------------------------------
def _slow_png() -> bytes:
    """A photo-sized noise image: the `natural` codec needs seconds for it on two CPU cores."""
    pixels = np.random.default_rng(0).integers(0, 256, size=(1024, 1024, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


def _in_flight(stack: Stack) -> float:
    text = httpx.get(f"{stack.url}/metrics", timeout=5).text
    match = re.search(r"^aec_requests_in_flight (\S+)$", text, re.MULTILINE)
    return float(match.group(1)) if match else 0.0


def test_sigterm_drains_the_request_in_flight(stack: Stack) -> None:
    body = _slow_png()
    answer: dict[str, object] = {}

    def slow_request() -> None:
        started = time.monotonic()
        try:
            r = httpx.post(f"{stack.url}/reconstruct?model=natural", content=body,
                           headers={"Content-Type": "image/png"}, timeout=120)
            answer.update(status=r.status_code, body=r.content, took=time.monotonic() - started)
        except httpx.HTTPError as exc:
            answer.update(error=repr(exc))

    client = threading.Thread(target=slow_request)
    client.start()
    deadline = time.monotonic() + 30
    while _in_flight(stack) < 2 and time.monotonic() < deadline:  # the gauge counts the /metrics call too
        time.sleep(0.05)
    assert client.is_alive(), f"the slow request finished before SIGTERM: {answer}"

    stopped: dict[str, float] = {}

    def stop() -> None:
        started = time.monotonic()
        stack.compose_run("stop", "api", timeout=GRACE_S + 30)  # SIGTERM, SIGKILL after stop_grace_period
        stopped["took"] = time.monotonic() - started

    stopper = threading.Thread(target=stop)
    stopper.start()
    # Once SIGTERM has arrived the server stops accepting: new requests fail while the old one runs on.
    refused = None
    while client.is_alive() and refused is None:
        try:
            httpx.get(f"{stack.url}/healthz", timeout=2)
            time.sleep(0.1)
        except httpx.HTTPError as exc:
            refused = type(exc).__name__
    still_running_when_refused = client.is_alive()
    client.join(timeout=120)
    stopper.join(timeout=GRACE_S + 40)

    exit_code = int(stack.inspect("{{.State.ExitCode}}"))
    stack.figures.update(drained_request_s=round(float(answer.get("took", math.nan)), 1),
                         stop_s=round(stopped.get("took", math.nan), 1), exit_code=exit_code)
    assert answer.get("status") == 200, answer.get("error") or answer.get("status")
    assert Image.open(io.BytesIO(answer["body"])).size == (1024, 1024)
    assert refused is not None and still_running_when_refused, (
        "no new request was refused while the slow one was still in flight (it finished first?)")
    assert exit_code in (0, 143), f"exit code {exit_code}: 137 means Docker had to SIGKILL it"
    assert stopped["took"] < GRACE_S - 5
    assert stack.inspect("{{.State.OOMKilled}}") == "false"
