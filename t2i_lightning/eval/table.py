"""The evaluation table as Markdown: a header saying what was measured with what, one row per variant.

A column appears when some row has its metric: without a judge the judge-space and alignment columns
are absent (the header says why), not filled with zeros. The Inception columns always appear: without
Inception weights their cells say so. Below it, the judge-space distance at several N, and the exact
alignment and kind split by the caption's object count, for the rows that have them.
"""

from __future__ import annotations

import re

from .inception import INCEPTION_KEYS, MISSING

COLUMNS = (
    ("judge FD", "judge_fd"), ("judge KID", "judge_kid"), ("judge P", "judge_precision"), ("judge R", "judge_recall"),
    ("CLIP FD", "clip_fd"), ("CLIP KID", "clip_kid"), ("CLIP P", "clip_precision"), ("CLIP R", "clip_recall"),
    ("CLIP score", "clip_score"), ("FID", "fid"), ("IS", "is"), ("KID", "inception_kid"),
    ("Inception P", "inception_precision"), ("Inception R", "inception_recall"), ("aligned", "align_all"),
    ("colour", "align_colour"), ("kind", "align_kind"), ("count", "align_count"), ("binding", "align_binding"),
    ("PSNR", "psnr"), ("SSIM", "ssim"), ("s/img", "s_per_image"),
)  # fmt: skip


def _cell(metric: dict | None, key: str, header: dict) -> str:
    if metric is None:
        return header.get("inception", MISSING) if key in INCEPTION_KEYS else "–"
    mean, std = metric["mean"], metric["std"]
    return f"{mean:.3g} ± {std:.2g}" if std else f"{mean:.3g}"


def table_columns(rows: list[dict]) -> list[tuple[str, str]]:
    """The columns of ``rows``: the Inception ones, and every other one some row has a value for."""
    present = {key for row in rows for key in row.get("metrics", {})}
    return [(name, key) for name, key in COLUMNS if key in INCEPTION_KEYS or key in present]


def format_table(table: dict) -> str:
    header, settings = table["header"], table["settings"]
    columns = table_columns(table["rows"])
    lines = ["# Evaluation", ""]
    lines += [f"- **{k}**: {v}" for k, v in header.items()]
    o = settings["options"]
    sampling = (f"{o['sampler']} with {o['steps']} steps, guidance scale {o['cfg_scale']}, "
                + (f"dynamic thresholding at {o['threshold']}" if o["threshold"] else "static clipping")
                + f", U-Nets (decoder, upsampler) in {o.get('precision', '32-true')}")  # fmt: skip
    lines += [f"- **settings**: N = {settings['n']} per variant, seeds {settings['seeds']}; decoder: {sampling}", ""]
    lines.append("| variant | " + " | ".join(name for name, _ in columns) + " |")
    lines.append("|---" * (len(columns) + 1) + "|")
    for row in table["rows"]:
        if "skipped" in row:
            lines.append(f"| {row['variant']} | skipped: {row['skipped']} |" + " |" * (len(columns) - 1))
            continue
        cells = [_cell(row["metrics"].get(key), key, header) for _, key in columns]
        lines.append(f"| {row['variant']} | " + " | ".join(cells) + " |")
    sizes = sorted({int(n) for row in table["rows"] for n in row.get("judge_fd_at_n", {})})
    if sizes:
        lines += ["", "Judge-space Fréchet distance at several N (seed 0): its small-sample bias.", ""]
        lines.append("| variant | " + " | ".join(f"N={n}" for n in sizes) + " |")
        lines.append("|---" * (len(sizes) + 1) + "|")
        for row in table["rows"]:
            if "judge_fd_at_n" in row:
                values = [row["judge_fd_at_n"].get(str(n)) for n in sizes]
                lines.append(f"| {row['variant']} | " + " | ".join("–" if v is None else f"{v:.3g}" for v in values) + " |")
    return "\n".join(lines + _by_object_count(table["rows"], header)) + "\n"


def _by_object_count(rows: list[dict], header: dict) -> list[str]:
    """The table of exact alignment and kind by the number of objects the captions state
    (:func:`~t2i_lightning.metrics.alignment.alignment_report`'s ``all_{c}obj``, ``kind_{c}obj``, ``n_{c}obj``)."""
    sizes: dict[int, int] = {}
    for row in rows:
        for key, metric in row.get("metrics", {}).items():
            if match := re.fullmatch(r"align_n_(\d+)obj", key):
                sizes.setdefault(int(match.group(1)), int(metric["mean"]))
    if not sizes:
        return []
    counts = sorted(sizes)
    names = [f"{name}, {c} object{'s' * (c > 1)} (n={sizes[c]})" for c in counts for name in ("aligned", "kind")]
    lines = ["", "Exact alignment and kind by the number of objects the caption states.", ""]
    lines += ["| variant | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
    for row in rows:
        metrics = row.get("metrics", {})
        if any(f"align_n_{c}obj" in metrics for c in counts):
            cells = [_cell(metrics.get(f"align_{name}_{c}obj"), "", header) for c in counts for name in ("all", "kind")]
            lines.append(f"| {row['variant']} | " + " | ".join(cells) + " |")
    return lines
