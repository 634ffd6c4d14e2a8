"""deploy/docker/train_entrypoint.py (the train image's entrypoint): which folders a command line
writes, and the refusal before training when one cannot be written (the real thing, uid 10001 against
a root-owned bind mount, runs in tests/deploy/test_docker_compose.py)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("train_entrypoint", ROOT / "deploy" / "docker" / "train_entrypoint.py")
entry = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(entry)


def test_folders_written_follow_the_training_cli_defaults_and_flags() -> None:
    assert entry.folders_written(["train", "--model", "conv_ae"]) == [Path("models_store"), Path("runs")]
    assert entry.folders_written(["train", "--out=/s", "--log-dir", "/l", "--checkpoint-dir", "/c"]) == [
        Path("/s"), Path("/l"), Path("/c")]
    assert entry.folders_written(["--help"]) == []
    assert entry.folders_written(["train", "--help"]) == []
    assert entry.folders_written(["evaluate", "models_store/mnist/1", "--dataset", "mnist"]) == []


def test_the_defaults_match_the_training_cli() -> None:
    from training.cli import build_parser

    args = build_parser().parse_args(["train", "--model", "conv_ae", "--dataset", "mnist"])
    assert str(args.out) == entry.WRITES["--out"] and str(args.log_dir) == entry.WRITES["--log-dir"]
    assert args.checkpoint_dir is None


def test_an_unwritable_store_stops_it_before_training(tmp_path: Path, monkeypatch, capsys) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    monkeypatch.setattr(entry.os, "execvp", lambda *a: pytest.fail("must not start training"))
    code = entry.main(["train", "--model", "conv_ae", "--out", str(blocker / "store"), "--log-dir", str(tmp_path)])
    assert code == entry.EX_CANTCREAT
    err = capsys.readouterr().err
    assert f"cannot write {blocker / 'store'}" in err and "AEC_UID" in err and "chown" in err


def test_a_writable_store_hands_over_to_the_training_cli(tmp_path: Path, monkeypatch) -> None:
    calls = []
    monkeypatch.setattr(entry.os, "execvp", lambda prog, argv: calls.append(argv))
    argv = ["train", "--model", "conv_ae", "--out", str(tmp_path / "new" / "store"), "--log-dir", str(tmp_path / "runs")]
    entry.main(argv)
    assert calls and calls[0][1:] == ["-m", "training", *argv]
    assert (tmp_path / "new" / "store").is_dir()  # created, and probed with a file that is gone again
    assert list((tmp_path / "new" / "store").iterdir()) == []
