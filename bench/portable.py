"""Do a model's streams decode on any machine? Encode under one TensorFlow configuration, decode under others.

    python bench/portable.py models_store/natural/9 [--images DIR] [--count 24]

Each side runs in a process of its own (`bench/portable_worker.py`), through the service's code path:
encoded with oneDNN on and TensorFlow's thread default, decoded with oneDNN on and off × one and all
intra-op threads (and on the GPU too, when `nvidia-smi` finds one). Every stream must decode to exactly
the symbols that were coded, and to pixels within one level of what the encoder's own configuration
decodes. Prints one row per decoder configuration (streams lost, symbol mismatches, largest pixel
difference, decode s/MP) and exits 1 when any stream is lost or differs. Float entropy parameters
fail this (natural version 8); integer ones must not (tests/portable/test_portable_streams.py).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
ENCODER = {"oneDNN": "1", "threads": "0"}
DECODERS = [{"oneDNN": "1", "threads": "0"}, {"oneDNN": "0", "threads": "0"},
            {"oneDNN": "1", "threads": "1"}, {"oneDNN": "0", "threads": "1"}]
if shutil.which("nvidia-smi"):  # the GPU path as well, where there is one (the others run on the CPU)
    DECODERS.append({"oneDNN": "1", "threads": "0", "gpu": "1"})


@dataclass
class Result:
    config: dict[str, str]
    streams: int = 0
    lost: list[str] = field(default_factory=list)
    mismatched: list[str] = field(default_factory=list)
    max_pixel_diff: int = 0
    seconds_per_mp: float = 0.0


@dataclass
class Report:
    encode_seconds_per_mp: float
    results: list[Result]

    @property
    def problems(self) -> list[str]:
        out = []
        for r in self.results:
            out += [f"{describe(r.config)}: stream {tag} lost: {why}" for tag, why in
                    (item.split("|", 1) for item in r.lost)]
            out += [f"{describe(r.config)}: {key} differs from what was coded" for key in r.mismatched]
            if r.max_pixel_diff > 1:
                out.append(f"{describe(r.config)}: pixels differ by up to {r.max_pixel_diff} levels")
        return out


def describe(config: dict[str, str]) -> str:
    device = "GPU" if config.get("gpu") else "CPU"
    return f"{device}, oneDNN {'on' if config['oneDNN'] == '1' else 'off'}, intra-op threads {config['threads'] or 'auto'}"


def _run(config: dict[str, str], *args: str) -> None:
    env = {**os.environ, "TF_ENABLE_ONEDNN_OPTS": config["oneDNN"], "TF_CPP_MIN_LOG_LEVEL": "2"}
    if not config.get("gpu"):
        env["CUDA_VISIBLE_DEVICES"] = ""
    subprocess.run([sys.executable, "-m", "bench.portable_worker", *args, "--threads", config["threads"]],
                   cwd=ROOT, env=env, check=True, timeout=1800)


def _seconds_per_mp(data) -> float:
    times = np.array([data[k] for k in data.files if k.startswith("time_")])
    return float(times[:, 0].sum() / times[:, 1].sum()) if len(times) else float("nan")


def check(version_dir: Path, workdir: Path, images: Path | None = None, count: int = 24) -> Report:
    streams = workdir / "streams.npz"
    _run(ENCODER, "encode", str(version_dir), str(streams), "--count", str(count),
         *(["--images", str(images)] if images else []))
    encoded = np.load(streams)
    decoded = []
    for i, config in enumerate(DECODERS):
        out = workdir / f"decoded_{i}.npz"
        _run(config, "decode", str(version_dir), str(streams), str(out))
        decoded.append((config, np.load(out)))
    reference = decoded[0][1]
    results = []
    for config, data in decoded:
        r = Result(config, streams=sum(k.startswith("stream_") for k in encoded.files),
                   seconds_per_mp=_seconds_per_mp(data))
        r.lost = [f"{k[6:]}|{data[k].tobytes().decode()}" for k in data.files if k.startswith("error_")]
        r.mismatched = [k for k in encoded.files if k.startswith("symbols_") and k in data.files
                        and not np.array_equal(data[k], encoded[k])]
        for key in (k for k in data.files if k.startswith("pixels_") and k in reference.files):
            r.max_pixel_diff = max(r.max_pixel_diff, int(np.abs(data[key].astype(int) - reference[key].astype(int)).max()))
        results.append(r)
    return Report(_seconds_per_mp(encoded), results)


def render(report: Report) -> str:
    lines = [f"encoded with {describe(ENCODER)}: {report.encode_seconds_per_mp:.2f} s/MP",
             "| decoder | streams | lost | symbols differ | max pixel diff | decode s/MP |", "|---|---|---|---|---|---|"]
    for r in report.results:
        lines.append(f"| {describe(r.config)} | {r.streams} | {len(r.lost)} | {len(r.mismatched)} | "
                     f"{r.max_pixel_diff} | {r.seconds_per_mp:.2f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("version_dir", type=Path, help="a model version folder, e.g. models_store/natural/9")
    parser.add_argument("--images", type=Path, help="a folder of photos (default: synthetic photo-like images)")
    parser.add_argument("--count", type=int, default=24, help="how many images")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="portable-") as tmp:
        report = check(args.version_dir, Path(tmp), args.images, args.count)
    print(render(report))
    for line in report.problems[:20]:
        print(line)
    return 1 if report.problems else 0


if __name__ == "__main__":
    sys.exit(main())
