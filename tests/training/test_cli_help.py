"""`python -m training`'s help states each default once (none for options without one), and TensorFlow's
start-up lines (cpu_feature_guard, oneDNN) stay quiet unless AEC_TF_VERBOSE asks for them."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from contract.tf_logging import tf_log_level
from training.cli import build_parser

ROOT = Path(__file__).resolve().parents[2]
NOISE = re.compile(r"oneDNN|cpu_feature_guard|rebuild TensorFlow|^I0000", re.MULTILINE)


def _help(command: str) -> str:
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command").choices[command]
    return re.sub(r"\s+", " ", sub.format_help())


def test_help_states_each_default_once() -> None:
    for command in ("train", "evaluate"):
        text = _help(command)
        assert "(default: None)" not in text, command
        assert not re.search(r"\(default: [^()]*\) \(default:", text), command
    train = _help("train")
    assert "(default: the architecture name)" in train and "(default: models_store)" in train
    assert "(default: default)" in train  # --strategy: a default that is a word, still stated


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("TF_CPP_MIN_LOG_LEVEL", "AEC_TF_VERBOSE")}
    return env | extra


def test_tensorflow_start_up_lines_are_quiet(tmp_path: Path) -> None:
    top = subprocess.run([sys.executable, "-m", "training", "--help"], cwd=ROOT, env=_env(), capture_output=True,
                         text=True, timeout=300, check=True)
    assert not NOISE.search(top.stdout + top.stderr)
    # a command that imports TensorFlow (training.data) and then stops on the missing dataset
    run = subprocess.run([sys.executable, "-m", "training", "evaluate", "models_store/mnist/1", "--dataset",
                          f"idx:{tmp_path / 'missing'}"], cwd=ROOT, env=_env(), capture_output=True, text=True,
                         timeout=600, check=False)
    assert run.returncode == 2 and "does not exist" in run.stderr, run.stderr[-2000:]
    assert not NOISE.search(run.stdout + run.stderr), run.stderr[-2000:]


def test_verbose_on_request() -> None:
    assert tf_log_level({}) == "2"
    assert tf_log_level({"AEC_TF_VERBOSE": "1"}) == "0" and tf_log_level({"AEC_TF_VERBOSE": "yes"}) == "0"
    assert tf_log_level({"AEC_TF_VERBOSE": "0"}) == "2"
    script = (
        "import os, runpy, sys; sys.argv = ['training', '--help']\n"
        "try:\n    runpy.run_module('training', run_name='__main__')\nexcept SystemExit:\n    pass\n"
        "print('LEVEL', os.environ['TF_CPP_MIN_LOG_LEVEL'])")
    for env, level in ((_env(), "2"), (_env(AEC_TF_VERBOSE="1"), "0"), (_env(TF_CPP_MIN_LOG_LEVEL="1"), "1")):
        out = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True, text=True,
                             timeout=300, check=True).stdout
        assert f"LEVEL {level}" in out, (env.get("AEC_TF_VERBOSE"), out)


FAKE_TENSORFLOW = '''
import os, sys, warnings
os.write(2, b"WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\\n")
os.write(2, b"I0000 00:00:1796195735.485036    5582 port.cc:153] oneDNN custom operations are on.\\n")
os.write(2, b"W0000 00:00:1796195735.485036    5582 some.cc:1] an absl warning\\n")
os.write(2, b"a line of our own from C\\n")
print("a Python line on stderr", file=sys.stderr)
warnings.warn("a Python warning", UserWarning)
'''

IMPORTER = """
import sys
from contract.tf_logging import quiet_tensorflow
quiet_tensorflow()
import tensorflow
print("loader", type(tensorflow.__loader__).__name__, type(tensorflow.__spec__.loader).__name__)
print("after the import", file=sys.stderr)
"""


@pytest.mark.parametrize("level, dropped_lines", [
    (None, ["absl::InitializeLog", "I0000", "W0000"]),  # the default, 2
    ("1", ["absl::InitializeLog", "I0000"]),
    ("0", []),
])
def test_absl_lines_that_ignore_the_level_are_held_back_while_tensorflow_imports(tmp_path, level, dropped_lines):
    """What TensorFlow 2.21 prints through absl at import on CPUs with oneDNN on by default, faked by a
    `tensorflow` package of our own that writes to fd 2 as C++ does: those lines go, the level decides
    which, and everything else written during the import comes through, in order, after it."""
    package = tmp_path / "tensorflow"
    package.mkdir()
    (package / "__init__.py").write_text(FAKE_TENSORFLOW)
    env = _env(PYTHONPATH=f"{tmp_path}{os.pathsep}{ROOT}", **({"TF_CPP_MIN_LOG_LEVEL": level} if level else {}))
    run = subprocess.run([sys.executable, "-c", IMPORTER], cwd=ROOT, env=env, capture_output=True, text=True,
                         timeout=120, check=True)
    assert "loader SourceFileLoader SourceFileLoader" in run.stdout  # the real loader, not the wrapper
    for line in ["absl::InitializeLog", "I0000", "W0000"]:
        assert (line in run.stderr) == (line not in dropped_lines), (line, run.stderr)
    kept = ["a line of our own from C", "a Python line on stderr", "a Python warning", "after the import"]
    positions = [run.stderr.index(line) for line in kept]
    assert positions == sorted(positions), run.stderr


def test_dropped_lines_are_only_absl_prefixes():
    from contract.tf_logging import dropped

    assert dropped(b"I0000 00:00:1796195735.485036    5582 port.cc:153] oneDNN custom operations are on", 2)
    assert dropped(b"W1202 07:15:00.1 5582 x.cc:1] a warning", 2) and not dropped(b"W1202 07:15:00.1 x", 1)
    assert not dropped(b"E0000 00:00:1796195735.485036 5582 x.cc:1] an error", 3)
    for line in (b"Traceback (most recent call last):", b"UserWarning: I0000 is not at the start", b"Illegal", b""):
        assert not dropped(line, 2)
