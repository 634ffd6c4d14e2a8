"""`python -m training`'s help states each default once (none for options without one), and TensorFlow's
start-up lines (cpu_feature_guard, oneDNN) stay quiet unless AEC_TF_VERBOSE asks for them."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

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
