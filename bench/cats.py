"""The kitten write-up, measured: 48×48 cat models against JPEG at equal bytes, and as a "cat?" check.

For each exported version (a SavedModel + card, read through its signatures only, as the service does):

- compression, on the held-out test cats (never seen in training or calibration): MSE on [0, 1] pixels,
  the real bitstream's bytes per image, and JPEG (Pillow, optimised Huffman tables, default 4:2:0) at
  the same bytes: per image the highest quality whose file is no larger than our stream;
- anomaly detection: AUROC of the test cats (normal) against other photos (anomalies: McMaster and
  Set14 by default), for every score the `anomaly_score` signature returns (mse, ssim, bits, combined,
  and with `--anomaly-score complexity` png_bpp and the complexity-corrected score), and two variants
  computed here from those outputs, not served: `complexity_ssim`, the same correction of log(1 − SSIM)
  (its line fitted by training.complexity.fit_line on the same validation cats as the card's), and
  Serrà et al.'s original difference `bits - png_bpp` (the model's code length against PNG's); and, at
  the card's calibrated threshold, the false-positive rate on the test cats and the share of other
  photos flagged, and the AUROC's 95% interval (Hanley & McNeil) for the card's score against all.

Every photo is sized as the service sizes an upload for a 48×48 model (training/recipes/cats.py).

    python bench/cats.py models_store/cats/1 artifacts/cats-dense/cats-dense/1 \\
        --data artifacts/cats48 --split 3000 --json artifacts/cats-bench.json
"""

from __future__ import annotations

import argparse
import io
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

DATASETS = ROOT.parent / "shared" / "datasets"
DEFAULT_OTHERS = [DATASETS / "natural" / "McMaster", DATASETS / "natural" / "Set14"]
SCORES = ("mse", "ssim", "bits", "combined", "png_bpp", "complexity", "complexity_ssim", "bits_vs_png")


def jpeg_at_bytes(image: np.ndarray, budget: int) -> tuple[int, int, float]:
    """(quality, bytes, MSE on [0, 1]) of the best Pillow JPEG of `image` (float [H, W, 3]) in `budget`
    bytes: the highest quality 1–95 whose file fits (quality 1 when none does)."""
    from PIL import Image

    u8 = np.round(np.clip(image, 0, 1) * 255).astype(np.uint8)
    pil = Image.fromarray(u8)

    def encode(quality: int) -> bytes:
        buffer = io.BytesIO()
        pil.save(buffer, format="JPEG", quality=quality, optimize=True)
        return buffer.getvalue()

    low, high, best = 1, 95, None
    while low <= high:  # JPEG size grows with quality (monotone enough for a bisection)
        mid = (low + high) // 2
        data = encode(mid)
        if len(data) <= budget:
            best, low = (mid, data), mid + 1
        else:
            high = mid - 1
    quality, data = best if best else (1, encode(1))
    decoded = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"), np.float64) / 255.0
    return quality, len(data), float(np.mean((decoded - u8 / 255.0) ** 2))


def outputs_of(coder, images: np.ndarray, batch: int = 100, ssim_line: dict | None = None) -> dict[str, np.ndarray]:
    """Every output of the anomaly_score signature but the error map, per image, plus bits_vs_png and
    (given the line of log(1 - SSIM) on log png_bpp) complexity_ssim."""
    parts: dict[str, list[np.ndarray]] = {}
    for start in range(0, len(images), batch):
        out = coder.anomaly_score(images[start : start + batch])
        for key, value in out.items():
            if key != "error_map":
                parts.setdefault(key, []).append(np.asarray(value, np.float64))
    found = {k: np.concatenate(v) for k, v in parts.items()}
    if "png_bpp" in found:
        found["bits_vs_png"] = found["bits"] - found["png_bpp"]
        if ssim_line is not None:
            from training.complexity import MSE_FLOOR

            found["complexity_ssim"] = (np.log(np.maximum(found["ssim"], MSE_FLOOR))
                                        - ssim_line["intercept"] - ssim_line["slope"] * np.log(found["png_bpp"]))
    return found


def hanley_mcneil(auroc: float, normal: int, anomalous: int) -> tuple[float, float]:
    """95% interval of an AUROC from its value and the two counts (Hanley & McNeil 1982)."""
    q1, q2 = auroc / (2 - auroc), 2 * auroc**2 / (1 + auroc)
    var = (auroc * (1 - auroc) + (anomalous - 1) * (q1 - auroc**2) + (normal - 1) * (q2 - auroc**2)) / (
        normal * anomalous)
    half = 1.96 * var**0.5
    return max(0.0, auroc - half), min(1.0, auroc + half)


def compression(coder, images: np.ndarray, batch: int = 100) -> dict[str, float]:
    """Our MSE and real stream bytes per test image, and JPEG's MSE at the same bytes."""
    ours_mse, ours_bytes, jpeg = [], [], []
    h, w, c = images.shape[1:]
    for start in range(0, len(images), batch):
        chunk = images[start : start + batch]
        latents = coder.encode(chunk)
        recon = coder.decode(latents)
        ours_mse += list(np.mean((recon.astype(np.float64) - chunk) ** 2, axis=(1, 2, 3)))
        for i in range(len(chunk)):
            n = coder.stream_bytes(latents, i, h, w, c)
            ours_bytes.append(n)
            jpeg.append(jpeg_at_bytes(chunk[i], n))
    quality, size, mse = (np.array(v, np.float64) for v in zip(*jpeg))
    ours_mse_a = np.array(ours_mse)
    return {"mse": float(ours_mse_a.mean()), "psnr": float(10 * np.log10(1 / ours_mse_a.mean())),
            "code_bytes_mean": float(np.mean(ours_bytes)), "bpp": float(8 * np.mean(ours_bytes) / (h * w)),
            "jpeg_mse": float(mse.mean()), "jpeg_psnr": float(10 * np.log10(1 / mse.mean())),
            "jpeg_bytes_mean": float(size.mean()), "jpeg_quality_mean": float(quality.mean()),
            "jpeg_over_budget": float(np.mean(size > np.array(ours_bytes))), "images": float(len(images))}


def anomaly(card, normal: dict[str, np.ndarray], others: dict[str, dict[str, np.ndarray]]) -> dict:
    """AUROC per score and collection (and all collections together), and the card threshold's rates."""
    from sklearn.metrics import roc_auc_score

    result: dict = {"auroc": {}}
    groups = {**others, "all": {k: np.concatenate([o[k] for o in others.values()]) for k in normal}}
    for score in SCORES:
        if score not in normal:
            continue
        result["auroc"][score] = {}
        for group, values in groups.items():
            labels = np.r_[np.zeros(len(normal[score])), np.ones(len(values[score]))]
            result["auroc"][score][group] = float(roc_auc_score(labels, np.r_[normal[score], values[score]]))
    if card.anomaly is not None:
        kind, threshold = card.anomaly.score, card.anomaly.threshold
        n_all = len(groups["all"][kind])
        result |= {"score": kind, "threshold": threshold,
                   "auroc_all_95": hanley_mcneil(result["auroc"][kind]["all"], len(normal[kind]), n_all),
                   "fpr_test_cats": float(np.mean(normal[kind] > threshold)),
                   "flagged": {g: float(np.mean(v[kind] > threshold)) for g, v in groups.items()}}
    return result


def load_cats(data: Path, split: int) -> tuple[np.ndarray, list[str]]:
    """The test cats: IDX positions `split` on, float [N, H, W, 3], with their file names."""
    from training.data import read_idx
    from training.recipes.cats import FILES_LIST, IMAGES_FILE

    pixels = read_idx(data / IMAGES_FILE)[split:]
    names = (data / FILES_LIST).read_text().split()[split:]
    return pixels.astype(np.float32) / 255.0, names


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("versions", type=Path, nargs="+", help="exported version folders, e.g. models_store/cats/1")
    parser.add_argument("--data", type=Path, default=ROOT / "artifacts" / "cats48",
                        help="the prepared cats (python -m training.recipes.cats prepare)")
    parser.add_argument("--split", type=int, default=3000, help="the --split the models were trained with: "
                        "IDX positions from here on are the test cats")
    parser.add_argument("--val-fraction", type=float, default=0.1,
                        help="the models' --val-fraction: the validation cats the complexity_ssim line is fitted on")
    parser.add_argument("--others", type=Path, nargs="+", default=DEFAULT_OTHERS,
                        help="folders of photos that are not cats (the anomalies), one collection each")
    parser.add_argument("--no-jpeg", action="store_true", help="skip the compression table")
    parser.add_argument("--json", type=Path, help="write every figure here")
    args = parser.parse_args(argv)

    from contract.card import ModelCard
    from training import data
    from training.complexity import fit_line
    from training.data import IMAGE_SUFFIXES
    from training.evaluate import coder_from_saved_model
    from training.recipes.cats import photos_at

    cats, names = load_cats(args.data, args.split)
    size = cats.shape[1]
    collections = {}
    for folder in args.others:
        paths = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        collections[folder.name] = photos_at(paths, size)
    print(f"normal: {len(cats)} test cats ({names[0]} … {names[-1]}); anomalies: "
          + ", ".join(f"{k} {len(v)}" for k, v in collections.items()), flush=True)

    rows = []
    for version in args.versions:
        card = ModelCard.read(version)
        coder = coder_from_saved_model(version)
        row = {"model": f"{card.name}/{card.version}", "architecture": card.architecture,
               "parameters": card.metrics.get("parameters"),
               "latent_values": int(np.prod(card.latents[0].shape)) if card.latents[0].shape else None,
               "input_values": int(np.prod(cats.shape[1:]))}
        if not args.no_jpeg:
            row["compression"] = compression(coder, cats)
        ssim_line = None
        if card.anomaly is not None and card.anomaly.complexity is not None:
            val = data.load(f"idx:{args.data}", split=args.split, val_fraction=args.val_fraction,
                            seed=card.training.seed or 0).val
            assert len(val) == card.anomaly.complexity.n, "not the validation cats the card's line was fitted on"
            found = outputs_of(coder, val)
            ssim_line = fit_line(found["ssim"], found["png_bpp"])
            row["ssim_line"] = ssim_line
        normal = outputs_of(coder, cats, ssim_line=ssim_line)
        row["anomaly"] = anomaly(card, normal, {k: outputs_of(coder, v, ssim_line=ssim_line)
                                                for k, v in collections.items()})
        rows.append(row)
        print(f"{row['model']} measured", flush=True)
        if args.json:
            args.json.write_text(json.dumps(rows, indent=1))
    print()
    print(tables(rows, list(collections)))
    return 0


def tables(rows: list[dict], collections: list[str]) -> str:
    lines = []
    if all("compression" in r for r in rows):
        lines += [("| model | parameters | code (values / input) | MSE | PSNR | bytes per image (bpp) | "
                   "JPEG at ≤ the same bytes: MSE | PSNR | bytes (quality) |"), "|---|---|---|---|---|---|---|---|---|"]
        for r in rows:
            c = r["compression"]
            code = f"{r['latent_values']} / {r['input_values']}" if r["latent_values"] else "-"
            params = f"{r['parameters'] / 1e6:.2f} M" if r["parameters"] else "-"
            lines.append(f"| {r['model']} ({r['architecture']}) | {params} | {code} | {c['mse']:.4f} | "
                         f"{c['psnr']:.2f} dB | {c['code_bytes_mean']:.0f} ({c['bpp']:.2f}) | {c['jpeg_mse']:.4f} | "
                         f"{c['jpeg_psnr']:.2f} dB | {c['jpeg_bytes_mean']:.0f} (q {c['jpeg_quality_mean']:.0f}) |")
        lines.append("")
    groups = [*collections, "all"]
    lines += ["AUROC, test cats (normal) against " + " / ".join(groups),
              "| model | " + " | ".join(SCORES) + " |", "|---|" + "---|" * len(SCORES)]
    for r in rows:
        auroc = r["anomaly"]["auroc"]
        cells = [" / ".join(f"{auroc[s][g]:.2f}" for g in groups) if s in auroc else "-" for s in SCORES]
        lines.append(f"| {r['model']} | " + " | ".join(cells) + " |")
    lines += ["", ("the card's score: AUROC against all (95% interval); at its threshold, false positives on "
                   "test cats and other photos flagged"),
              "| model | score | AUROC all | threshold | FPR (test cats) | flagged " + " / ".join(groups) + " |",
              "|---|---|---|---|---|---|"]
    for r in rows:
        a = r["anomaly"]
        if "threshold" in a:
            low, high = a["auroc_all_95"]
            lines.append(f"| {r['model']} | {a['score']} | {a['auroc'][a['score']]['all']:.3f} ({low:.2f}–{high:.2f}) | "
                         f"{a['threshold']:.4g} | {a['fpr_test_cats']:.2%} | "
                         + " / ".join(f"{a['flagged'][g]:.0%}" for g in groups) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
