"""Print the requirements an image build installs: the project's dependencies, the given extras' and the
build backend's, one per line, straight from pyproject.toml (the one source of truth).

    python deploy/docker/requirements.py service,cpu  # the API image (CPU)
    python deploy/docker/requirements.py train,cpu    # the train image (CPU)
    python deploy/docker/requirements.py service,cpu --no-build   # without the build backend (what the image installs)

`deploy/docker/wheelhouse.sh` feeds this to `pip download` to make a wheelhouse for offline builds.
"""

from __future__ import annotations

import argparse
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def requirements(extras: list[str], pyproject: Path = ROOT / "pyproject.toml", build: bool = True) -> list[str]:
    """Base dependencies + each extra's, and (`build`) the PEP 517 build requirements, so that a
    wheelhouse also serves `pip install .` of the project itself (setuptools, wheel) offline."""
    data = tomllib.loads(pyproject.read_text())
    optional = data["project"].get("optional-dependencies", {})
    unknown = [e for e in extras if e not in optional]
    if unknown:
        raise SystemExit(f"unknown extra(s) {unknown}; pyproject.toml has {sorted(optional)}")
    lines = (list(data["build-system"]["requires"]) if build else []) + list(data["project"]["dependencies"])
    for extra in extras:
        lines += optional[extra]
    return lines


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("extras", nargs="?", default="", help="comma-separated extras, e.g. service,cpu")
    parser.add_argument("--no-build", action="store_true", help="leave out the build backend's requirements")
    parser.add_argument("--pyproject", type=Path, default=ROOT / "pyproject.toml")
    args = parser.parse_args()
    chosen = [e for e in args.extras.split(",") if e]
    print("\n".join(requirements(chosen, args.pyproject, build=not args.no_build)))
