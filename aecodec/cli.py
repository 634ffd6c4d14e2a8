"""`aecodec`: the command line over `Client`.

    aecodec encode photo.png -o photo.aec      aecodec decode photo.aec -o out.png
    aecodec --model natural encode photo.png -q 3.5   (variable-rate models: the quality)
    aecodec --model natural encode photo.png --max-bytes 8000   (the best quality that fits; or --target-bpp)
    aecodec --model natural encode photo.png -q 6 --effort 3   (refine the latents first: fewer bits, slower)
    aecodec reconstruct x.png -o y.png         aecodec score image.png [--heatmap map.png]
    aecodec models

`--url`, `--api-key`, `--model`, `--version` go before or after the command; AEC_URL and AEC_API_KEY
are the fallbacks. Figures go to stdout (`--json` for machines), errors to stderr with exit status 1.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

from aecodec.errors import ServiceError
from aecodec.sync import DEFAULT_URL, Client


def _common(parser: argparse.ArgumentParser, top: bool) -> None:
    """The shared options, on the main parser (with defaults) and on each command (without, so an
    option given before the command is not reset by the command's parser)."""
    d = (lambda value: value) if top else (lambda value: argparse.SUPPRESS)
    parser.add_argument("--url", default=d(os.environ.get("AEC_URL", DEFAULT_URL)),
                        help="service URL (env AEC_URL; default %(default)s)" if top else argparse.SUPPRESS)
    parser.add_argument("--api-key", default=d(os.environ.get("AEC_API_KEY")),
                        help="API key (env AEC_API_KEY)" if top else argparse.SUPPRESS)
    parser.add_argument("--model", default=d(None), help="model name (default: the service's default)")
    parser.add_argument("--version", type=int, default=d(None), help="model version (default: newest)")
    parser.add_argument("--timeout", type=float, default=d(120.0), help=argparse.SUPPRESS if not top else
                        "seconds per request (default %(default)s)")
    parser.add_argument("--json", action="store_true", default=d(False), help="print results as JSON")


QUALITY_HELP = "variable-rate models: 1 (fewest bits) up to the number of levels, fractions allowed (default: the model's)"
MAX_BYTES_HELP = ("compress to a size: the highest quality whose stream fits in N bytes (header included); "
                  "fails naming the smallest size possible when none fits; not with -q")
EFFORT_HELP = ("models with an encoder effort setting: 1 up to its max_effort refines the latents first, fewer "
               "bits at the same quality for seconds to minutes of server time per megapixel (default 0); not with "
               "a size target")
TARGET_BPP_HELP = "as --max-bytes, in bits per pixel of the image: N = floor(B * width * height / 8)"


def _rate_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-q", "--quality", type=float, help=QUALITY_HELP)
    parser.add_argument("--max-bytes", type=int, metavar="N", help=MAX_BYTES_HELP)
    parser.add_argument("--target-bpp", type=float, metavar="B", help=TARGET_BPP_HELP)
    parser.add_argument("--effort", type=int, metavar="E", help=EFFORT_HELP)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="aecodec", description="Client for the aecodec image-compression service.")
    _common(parser, top=True)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, help_text: str) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help_text, description=help_text)
        _common(sub, top=False)
        return sub

    sub = command("encode", "compress an image to a bitstream file")
    sub.add_argument("image", type=Path)
    sub.add_argument("-o", "--output", type=Path, help="bitstream file (default: IMAGE with .aec)")
    _rate_options(sub)
    sub = command("decode", "decompress a bitstream file to an image")
    sub.add_argument("stream", type=Path)
    sub.add_argument("-o", "--output", type=Path, help="image file (default: STREAM with .png)")
    sub.add_argument("--format", choices=["png", "webp", "jpeg"], help="default: from -o's suffix, else png")
    sub = command("reconstruct", "encode and decode in one call; report PSNR")
    sub.add_argument("image", type=Path)
    sub.add_argument("-o", "--output", type=Path, help="image file (default: IMAGE.reconstructed.png)")
    _rate_options(sub)
    sub = command("score", "anomaly score against the model's calibrated threshold")
    sub.add_argument("image", type=Path)
    sub.add_argument("--heatmap", type=Path, help="also write the per-pixel error heat map (PNG)")
    command("models", "list the served models and versions")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        with Client(args.url, api_key=args.api_key, timeout=args.timeout, model=args.model,
                    version=args.version) as client:
            return COMMANDS[args.command](client, args)
    except ServiceError as exc:
        print(f"aecodec: {exc.code}: {exc.message}", file=sys.stderr)
        return 1
    except OSError as exc:  # unreadable input, unwritable output
        print(f"aecodec: {exc}", file=sys.stderr)
        return 1


def _emit(args: argparse.Namespace, text: str, data: dict) -> None:
    print(json.dumps(data) if args.json else text)


def _encode(client: Client, args: argparse.Namespace) -> int:
    encoded = client.encode(args.image, quality=args.quality, max_bytes=args.max_bytes, target_bpp=args.target_bpp,
                            effort=args.effort)
    output = encoded.save(args.output or args.image.with_suffix(".aec"))
    size = args.image.stat().st_size
    _emit(args, f"{args.image} -> {output}: {len(encoded)} B, {encoded.bpp:.4f} bpp, "
                f"{size / len(encoded):.2f}:1 vs the file ({encoded.model} v{encoded.version}"
                f"{'' if encoded.quality is None else f' quality {encoded.quality:g}'}"
                f"{f' effort {encoded.effort}' if encoded.effort else ''}, "
                f"{encoded.width}x{encoded.height})",
          {"output": str(output), "bytes": len(encoded), "bpp": encoded.bpp, "ratio": size / len(encoded),
           "model": encoded.model, "version": encoded.version, "width": encoded.width, "height": encoded.height,
           "quality": encoded.quality, "effort": encoded.effort})
    return 0


def _decode(client: Client, args: argparse.Namespace) -> int:
    output = args.output or args.stream.with_suffix(".png")
    fmt = args.format or {".webp": "webp", ".jpg": "jpeg", ".jpeg": "jpeg"}.get(output.suffix.lower(), "png")
    image = client.decode(args.stream, format=fmt)
    image.save(output, format=fmt.upper())
    _emit(args, f"{args.stream} -> {output}: {image.width}x{image.height} {image.mode}",
          {"output": str(output), "width": image.width, "height": image.height, "mode": image.mode})
    return 0


def _reconstruct(client: Client, args: argparse.Namespace) -> int:
    result = client.reconstruct(args.image, quality=args.quality, max_bytes=args.max_bytes,
                                target_bpp=args.target_bpp, effort=args.effort)
    output = args.output or args.image.with_name(args.image.stem + ".reconstructed.png")
    result.image.save(output)
    psnr = "inf (exact)" if result.psnr == float("inf") else f"{result.psnr:.2f} dB"
    ms_ssim = "" if result.ms_ssim is None else f", MS-SSIM {result.ms_ssim:.4f}"
    size = "" if result.stream_bytes is None else f", stream {result.stream_bytes} B ({result.bpp:.4f} bpp)"
    quality = ("" if result.quality is None else f" quality {result.quality:g}") + (
        f" effort {result.effort}" if result.effort else "")
    _emit(args, f"{args.image} -> {output}: PSNR {psnr}{ms_ssim}, MSE {result.mse:.3e}{size} "
                f"({result.model} v{result.version}{quality})",
          {"output": str(output), "psnr": None if result.psnr == float("inf") else result.psnr, "mse": result.mse,
           "ms_ssim": result.ms_ssim, "model": result.model, "version": result.version, "quality": result.quality,
           "bytes": result.stream_bytes, "bpp": result.bpp, "effort": result.effort})
    return 0


def _score(client: Client, args: argparse.Namespace) -> int:
    result = client.anomaly_score(args.image, heatmap=args.heatmap is not None)
    if args.heatmap is not None and result.heatmap is not None:
        result.heatmap.save(args.heatmap)
    verdict = "ANOMALY" if result.is_anomaly else "normal"
    _emit(args, f"{args.image}: {verdict} (score {result.score:.6g} vs threshold {result.threshold:.6g}, "
                f"{result.score_kind}; {result.model} v{result.version})",
          {"score": result.score, "threshold": result.threshold, "is_anomaly": result.is_anomaly,
           "normalized_score": result.normalized_score,
           "score_kind": result.score_kind, "model": result.model, "version": result.version})
    return 0


def _models(client: Client, args: argparse.Namespace) -> int:
    models = client.models()
    if args.json:
        print(json.dumps([asdict(m) for m in models]))
        return 0
    print(f"{'model':<24} {'version':>7}  {'state':<9} {'architecture':<18} {'input':<14} threshold")
    for model in models:
        for v in model.versions:
            size = "-" if not v.input else ("any" if v.input.get("any_size") else f"{v.input['width']}x{v.input['height']}")
            size += f"x{v.input['channels']}" if v.input else ""
            mark = "*" if model.is_default and v.version == model.default_version else " "
            threshold = "-" if v.anomaly_threshold is None else f"{v.anomaly_threshold:.6g}"
            state = v.state if not v.error else f"failed: {v.error[:60]}"
            print(f"{model.name + mark:<24} {v.version:>7}  {state:<9} {v.architecture or '-':<18} {size:<14} {threshold}")
    return 0


COMMANDS = {"encode": _encode, "decode": _decode, "reconstruct": _reconstruct, "score": _score, "models": _models}
