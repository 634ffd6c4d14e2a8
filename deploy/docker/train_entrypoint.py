"""The train image's entrypoint: check that every folder `python -m training train` will write
(--out, --log-dir, --checkpoint-dir) is writable by the user the container runs as, *before* TensorFlow
is imported and hours are spent training, then hand over to `python -m training` (exec, same PID, so
signals reach it).

Why: compose bind-mounts host folders (./models_store, ./runs) that the host user owns, while the
image runs as uid 10001. Without this check the training runs to the end and the export fails. With
it the container exits at once with status 73 (EX_CANTCREAT) and says how to fix it.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

EX_CANTCREAT = 73
#: Flags of `python -m training train` naming folders it writes, with their defaults (training/cli.py).
WRITES = {"--out": "models_store", "--log-dir": "runs", "--checkpoint-dir": None}


def folders_written(argv: list[str]) -> list[Path]:
    """The folders a `train` command line writes into; nothing for other commands (help, evaluate)."""
    if not argv or argv[0] != "train" or "-h" in argv or "--help" in argv:
        return []
    parser = argparse.ArgumentParser(add_help=False)
    for flag, default in WRITES.items():
        parser.add_argument(flag, default=default)
    known, _ = parser.parse_known_args(argv[1:])
    return [Path(v) for v in vars(known).values() if v]


def unwritable(folder: Path) -> str | None:
    """Why `folder` cannot take new files (None when it can): create it if missing, then really create
    and delete a file in it, which catches read-only mounts, ownership and full disks alike."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".aec-write-check-"):
            pass
    except OSError as exc:
        return exc.strerror or str(exc)
    return None


def explain(folder: Path, why: str) -> str:
    try:
        owner = folder.stat().st_uid
    except OSError:
        owner = None
    uid, gid = os.getuid(), os.getgid()
    return (
        f"aec-train: cannot write {folder.resolve()} ({why}) as uid {uid}, gid {gid}"
        + (f"; it belongs to uid {owner}" if owner is not None else "")
        + ".\nTraining would fail at export, so it does not start. Either run the container as the folder's "
        "owner (compose: AEC_UID=$(id -u) AEC_GID=$(id -g) docker compose --profile train run --rm train ...), "
        f"or make the folder writable by uid {uid} (e.g. sudo chown -R {uid}:{gid} ./models_store ./runs), "
        "and mount it read-write."
    )


def main(argv: list[str]) -> int:
    problems = [explain(f, why) for f in folders_written(argv) if (why := unwritable(f))]
    if problems:
        print("\n".join(problems), file=sys.stderr)
        return EX_CANTCREAT
    if not os.access(os.path.expanduser("~"), os.W_OK):  # an arbitrary --user has no home: Keras caches in ~/.keras
        os.environ["HOME"] = tempfile.gettempdir()
    os.execvp(sys.executable, [sys.executable, "-m", "training", *argv])
    return 0  # not reached


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
