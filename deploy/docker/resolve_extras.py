"""Resolve `pip install '.[EXTRAS]'` with pip's real resolver for the images' platform (CPython 3.11,
manylinux x86_64), without installing or downloading the wheels (`--dry-run --report`, metadata only),
and fail unless exactly one TensorFlow comes out. Prints the TensorFlow and the NVIDIA wheels chosen.

    python deploy/docker/resolve_extras.py service,gpu   # what the GPU image installs

This is the check a new user's `pip install '.[gpu]'` failed (tensorflow and tensorflow-cpu together);
needs PyPI, so `make docker-test` runs it and the static test (tests/deploy/test_files.py) covers offline.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PLATFORMS = ["manylinux2010_x86_64", "manylinux2014_x86_64", "manylinux_2_17_x86_64", "manylinux_2_27_x86_64",
             "manylinux_2_28_x86_64", "manylinux_2_31_x86_64"]
TENSORFLOWS = {"tensorflow", "tensorflow-cpu", "tensorflow-gpu", "tensorflow-intel"}


def resolve(extras: str) -> list[tuple[str, str]]:
    """(name, version) of every distribution the install would bring."""
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "report.json"
        platforms = [arg for p in PLATFORMS for arg in ("--platform", p)]
        subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--dry-run", "--ignore-installed",
                        "--report", str(report), "--python-version", "3.11", "--only-binary=:all:", *platforms,
                        "--target", str(Path(tmp) / "target"), f"{ROOT}[{extras}]"], check=True)
        installs = json.loads(report.read_text())["install"]
    return sorted((i["metadata"]["name"].lower().replace("_", "-"), i["metadata"]["version"]) for i in installs)


if __name__ == "__main__":
    extras = sys.argv[1] if len(sys.argv) > 1 else "service,gpu"
    resolved = resolve(extras)
    tensorflows = [f"{n}=={v}" for n, v in resolved if n in TENSORFLOWS]
    nvidia = [f"{n}=={v}" for n, v in resolved if n.startswith("nvidia-")]
    print(f"[{extras}]: {len(resolved)} distributions; TensorFlow: {', '.join(tensorflows) or 'none'}; "
          f"NVIDIA wheels ({len(nvidia)}): {', '.join(nvidia) or 'none'}")
    sys.exit(0 if len(tensorflows) == 1 else 1)
