"""Sustained mixed load on all four endpoints, with every answer checked against its request.

    python bench/load.py                                  # own server on models_store, 120 s at 64
    python bench/load.py --url http://127.0.0.1:8000 --model mnist --duration 300 --concurrency 128
    python bench/load.py --models-dir /tmp/store --model tiny --duration 5 --concurrency 16
    python bench/load.py --hostile 0.1                    # 10% of requests are attacks (issue 18's classes)

An asyncio httpx driver, bounded in time (--duration, then in-flight requests finish) and optionally in
count (--max-requests), on loopback only. Before the load it records a reference answer per image,
one request at a time; under load every answer is compared with its image's reference, so a response
delivered to the wrong request (or a batch slice handed to the wrong caller) shows up as a mismatch:

- /encode: the stream's header names this image's size, and its bytes equal the reference stream;
- /decode of the latest stream /encode returned for image i equals /reconstruct of image i (±1 level);
- /reconstruct of image i equals its reference (±1 level) at image i's size;
- /anomaly-score of image i equals its reference score (relative 1e-5: batch composition may move the
  last float bits, never more).

With `--hostile F`, a fraction F of the requests are attacks instead, each with the one answer it must
get (anything else is a mismatch): 64 zlib-bomb PNGs in one multipart (413), one 4096² bomb (200: within
every limit, so it must be served, a few at a time), eight forged streams claiming 4096² (413), a
stream of the shipped `natural` codec claiming 4096² with empty payloads (400, when that model is
served), a float TIFF with NaN pixels (400), a 1 MB request header (431), a truncated JPEG (400), a PNG
with a zTXt bomb (413), a full-width digit in ?version= (422) and a path forging a log line (404).
Each kind has its own row; RSS at start and end shows whether they left memory behind.

Images are synthetic, of mixed sizes (as the model's size policy allows) and grey or colour. The table
gives requests, errors (any non-200, transport failures included), 5xx, mismatches, p50/p99 latency
per endpoint, and the server's RSS at start and end (from its /metrics). Exit status 1 when any 5xx,
transport failure or mismatch happened.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script: the repository's packages importable
    sys.path.insert(0, str(ROOT))

from bench.launcher import server_process
from bench.loadlib.driver import run_load


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--url", help="load this running server (loopback) instead of starting one")
    parser.add_argument("--models-dir", type=Path, default=ROOT / "models_store",
                        help="store for the server this script starts (default %(default)s)")
    parser.add_argument("--model", help="model to load (default: the server's default)")
    parser.add_argument("--duration", type=float, default=120.0, help="seconds of load (default %(default)s)")
    parser.add_argument("--concurrency", type=int, default=64, help="requests in flight (default %(default)s)")
    parser.add_argument("--max-requests", type=int, default=0, help="stop after this many requests (0 = no cap)")
    parser.add_argument("--images", type=int, default=12, help="distinct test images (default %(default)s)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--api-key", default=os.environ.get("AEC_API_KEY"), help="X-API-Key (env AEC_API_KEY)")
    parser.add_argument("--timeout", type=float, default=60.0, help="per-request timeout in seconds")
    parser.add_argument("--hostile", type=float, default=0.0, metavar="F",
                        help="fraction of requests that are attacks, each checked for its one right answer "
                             "(rows starting with '!'; default %(default)s)")
    parser.add_argument("--server-env", action="append", default=[], metavar="AEC_X=V",
                        help="setting for the server this script starts (repeatable)")
    parser.add_argument("--json", type=Path, help="also write the report here")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    overrides = dict(item.split("=", 1) for item in args.server_env)
    load = {"model": args.model, "duration": args.duration, "concurrency": args.concurrency,
            "max_requests": args.max_requests, "n_images": args.images, "seed": args.seed, "api_key": args.api_key,
            "timeout": args.timeout, "hostile": args.hostile}
    if args.url:
        report = asyncio.run(run_load(args.url, **load))
    else:
        with server_process(timeout=300, stop_timeout=60, env=overrides, models_dir=args.models_dir.resolve(),
                            log_level="WARNING") as server:
            report = asyncio.run(run_load(server.url, **load))
    print(report.table())
    if args.json:
        args.json.write_text(json.dumps(report.to_json(), indent=2))
    return 0 if report.ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
