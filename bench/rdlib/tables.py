"""bench/rd.py's tables and plot."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

from bench import bdrate
from bench.rdlib.curves import ANCHORS, BD_RANGE, Summary, bd_pair, median
from bench.rdlib.ours import OursResult


def _targets_table(rows: list[dict], targets: Sequence[float], key: str, cell: Callable[[dict], str]) -> str:
    """One line per codec, one column per target bpp, each cell from the row's `key` entry for it."""
    lines = ["| codec | " + " | ".join(f"@{t:g} bpp" for t in targets) + " |", "|---" * (len(targets) + 1) + "|"]
    for row in rows:
        lines.append(f"| {row['label']} | " + " | ".join(cell(e) for e in row[key]) + " |")
    return "\n".join(lines)


def render_mean_curve_table(rows: list[dict], targets: Sequence[float]) -> str:
    return _targets_table(rows, targets, "psnr_on_mean_curve", lambda e: fmt(e["psnr"], ".2f"))


def render_every_image_table(rows: list[dict], targets: Sequence[float]) -> str:
    """Per-image PSNR at each target over every image; "(e extrap.)" counts the images read off the
    straight extension of their own curve because it stops short of the target."""
    def cell(entry: dict) -> str:
        if entry["mean_psnr_all"] is None:
            return "n/a"
        return f"{entry['mean_psnr_all']:.2f}" + (f" ({entry['extrapolated']} extrap.)" if entry["extrapolated"] else "")

    return _targets_table(rows, targets, "psnr_at", cell)


def render_ms_ssim_table(rows: list[dict], targets: Sequence[float]) -> str:
    """MS-SSIM on the mean curves at each target bpp, in dB (-10·log10(1 - MS-SSIM)) with the MS-SSIM
    itself in brackets, and the BD-rate over MS-SSIM in dB against each anchor (whole shared range and
    0.25-1 bpp). Rows without an MS-SSIM curve are left out."""
    rows = [r for r in rows if r.get("ms_ssim_on_mean_curve")]
    anchors = [a for a in ANCHORS if any(a in r.get("bd_ms_ssim", {}) for r in rows)]
    names = {"jpeg": "JPEG", "webp": "WebP", "avif": "AVIF"}
    header = (["codec"] + [f"MS-SSIM @{t:g} bpp" for t in targets]
              + [f"BD(MS-SSIM) vs {names[a]}{r}" for a in anchors for r in ("", " 0.25-1")])
    body = []
    for row in rows:
        cells = [row["label"]]
        for entry in row["ms_ssim_on_mean_curve"]:
            db = entry["ms_ssim_db"]
            cells.append("n/a" if db is None else f"{db:.2f} dB ({1 - 10 ** (-db / 10):.4f})")
        for anchor in anchors:
            bd = row["bd_ms_ssim"].get(anchor)
            cells += [fmt(bd and bd["full"], "+.1f", "%"), fmt(bd and bd["0.25-1.0"], "+.1f", "%")] if bd else ["-", "-"]
        body.append(cells)
    return _aligned(header, body)


def _aligned(header: list[str], body: list[list[str]]) -> str:
    widths = [max(len(str(r[i])) for r in [header] + body) for i in range(len(header))]
    lines = ["| " + " | ".join(h.ljust(w) for h, w in zip(header, widths)) + " |",
             "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
    lines += ["| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths)) + " |" for cells in body]
    return "\n".join(lines)


def fmt(value: float | None, spec: str, suffix: str = "") -> str:
    return "n/a" if value is None else f"{value:{spec}}{suffix}"


def psnr_cell(entry: dict) -> str:
    if entry["mean_psnr"] is None:
        return "n/a"
    partial = f" ({entry['images']}/{entry['of']})" if entry["images"] < entry["of"] else ""
    return f"{entry['mean_psnr']:.2f}{partial}"


def render_table(rows: list[dict], targets: Sequence[float]) -> str:
    anchors = [a for a in ANCHORS if any(a in row["bd"] for row in rows)]
    names = {"jpeg": "JPEG", "webp": "WebP", "avif": "AVIF"}
    header = (["codec"] + [f"PSNR @{t:g} bpp" for t in targets]
              + [f"BD vs {names[a]}{r}" for a in anchors for r in ("", " 0.25-1")] + ["enc s/MP", "dec s/MP"])
    body = []
    for row in rows:
        cells = [row["label"]] + [psnr_cell(e) for e in row["psnr_at"]]
        for anchor in anchors:
            bd = row["bd"].get(anchor)
            cells += [fmt(bd and bd["full"], "+.1f", "%"), fmt(bd and bd["0.25-1.0"], "+.1f", "%")] if bd else ["-", "-"]
        cells += [fmt(row["enc_s_per_mp"], ".3f"), fmt(row["dec_s_per_mp"], ".3f")]
        body.append(cells)
    return _aligned(header, body)


def render_points(models: list[dict], ours: dict[str, list[dict]], by_model: dict[str, dict],
                  ms_by_model: dict[str, dict] | None = None) -> str:
    """One line per operating point; "mean MS-SSIM" over the images it could be measured on."""
    ms_by_model = ms_by_model or {}
    lines = ["| operating point | lmbda | images | mean bpp | mean PSNR | mean MS-SSIM | enc s/MP | dec s/MP |",
             "|---|---|---|---|---|---|---|---|"]
    for m in models:
        rows = [r for rs in ours.values() for r in rs if r["model"] == m["name"]]
        c = by_model.get(m["name"])
        if c is None:
            continue
        point = (f"{m['model']}/{m['version']}" + ("" if m["quality"] is None else f" q{m['quality']:g}")
                 + (f" effort {m['effort']}" if m.get("effort") else ""))
        ms = ms_by_model.get(m["name"])
        ms_cell = "n/a" if ms is None else f"{ms['ms_ssim']:.4f}" + ("" if ms["n"] == c["n"] else f" ({ms['n']})")
        lines.append(
            f"| {point} | {fmt(m['lmbda'], 'g')} | {c['n']} | {c['bpp']:.4f} | {c['psnr']:.2f} | {ms_cell} | "
            f"{fmt(median(r['enc_s_per_mp'] for r in rows), '.3f')} | {fmt(median(r['dec_s_per_mp'] for r in rows), '.3f')} |"
        )
    return "\n".join(lines)


def plot(path: Path, curves: dict[str, list[dict]], title: str, max_bpp: float, targets: Sequence[float]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5.5), dpi=120)
    styles = {"JPEG": "tab:red", "WebP": "tab:green", "AVIF": "tab:purple"}
    ours_colors = iter(["tab:blue", "tab:orange", "tab:cyan", "tab:brown", "tab:olive"])
    for label, curve in curves.items():
        r, p = bdrate.frontier([c["bpp"] for c in curve], [c["psnr"] for c in curve])
        keep = r <= max_bpp * 1.05
        if label in styles:
            ax.plot(r[keep], p[keep], "-", color=styles[label], label=label, linewidth=1.5)
        else:
            ax.plot(r[keep], p[keep], "o-", color=next(ours_colors, "tab:gray"), label=label, linewidth=2,
                    markersize=5)
    for t in targets:
        ax.axvline(t, color="0.8", linewidth=0.8, linestyle=":", zorder=0)
    ax.axvspan(*BD_RANGE, color="0.95", zorder=-1)
    ax.set_xlim(0, max_bpp)
    ax.set_xlabel("bits per pixel (whole file or stream, headers included)")
    ax.set_ylabel("PSNR (dB, 8-bit RGB), mean over images")
    ax.set_title(title, fontsize=10)
    ax.grid(True, alpha=0.3)
    ax.legend(loc="lower right")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def print_tables(summary: Summary, ours: OursResult, *, folders: str, n_images: int, megapixels: float,
                 targets: Sequence[float], bd_method: str, settings_note: str, speed_quality: int) -> None:
    """The tables bench/rd.py prints: the summary, the mean-curve and every-image readings, per-image and
    version-against-version BD-rates, the operating points, and the settings."""
    rows = summary.rows
    print(f"\nRate–distortion on {folders}: {n_images} image(s), {megapixels:.2f} MP; "
          f"BD-rate ({bd_method}) on mean curves, negative = fewer bits than the anchor")
    print(render_table(rows, targets))
    if any(e["mean_psnr"] is not None and e["images"] < e["of"] for row in rows for e in row["psnr_at"]):
        print("(k/n): only k of the n images reach that rate on their own curve; the mean is over those k")
    print("\nPSNR on the mean curves (as plotted: every image, mean bpp and mean PSNR per setting):")
    print(render_mean_curve_table(rows, targets))
    print("\nPSNR per image over every image (an image's curve that stops short of b is extended by the line "
          "through its two nearest points):")
    print(render_every_image_table(rows, targets))
    if any(row.get("ms_ssim_on_mean_curve") for row in rows):
        print("\nMS-SSIM on the mean curves, in dB = -10·log10(1 - MS-SSIM) (MS-SSIM in brackets), and the BD-rate "
              "over it (images of 161 px a side or more; classic codecs at every --ms-ssim-stride-th quality):")
        print(render_ms_ssim_table(rows, targets))
    else:
        print("\nMS-SSIM: not measured (--ms-ssim-stride 0, or no image of 161 px a side or more)")
    for ours_row in rows[: len(summary.ours_keys)]:
        for anchor in ANCHORS:
            if anchor in ours_row.get("bd_per_image", {}):
                pi = ours_row["bd_per_image"][anchor]
                print(f"per-image BD-rate of {ours_row['label']} vs {summary.labels[anchor]}, mean over images: "
                      f"{fmt(pi['full']['mean'], '+.1f', '%')} ({pi['full']['images']}/{pi['full']['of']} images), "
                      f"0.25-1.0 bpp {fmt(pi['0.25-1.0']['mean'], '+.1f', '%')} "
                      f"({pi['0.25-1.0']['images']}/{pi['0.25-1.0']['of']} images)")
    keys = summary.ours_keys
    for newer in keys[1:]:  # every later version against the first one named
        bd = bd_pair(summary.means[keys[0]], summary.means[newer], bd_method)
        print(f"BD-rate of {summary.labels[newer]} vs {summary.labels[keys[0]]} (mean curves): "
              f"{fmt(bd['full'], '+.1f', '%')} over the range both cover, {fmt(bd['0.25-1.0'], '+.1f', '%')} over 0.25-1 bpp")
    print()
    print(render_points(ours.models, ours.points, {r["model"]: r for key in keys for r in summary.means[key]},
                        {r["model"]: r for key in keys for r in summary.ms_ssim_means.get(key, [])}))
    print(f"\nclassic: {settings_note}; timing at quality {speed_quality}")
    for line in ours.skipped:
        print(f"skipped: {line}")
