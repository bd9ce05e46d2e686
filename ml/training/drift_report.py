"""The drift report a person opens: drift.html (the table), drift.png (the distributions), drift.json (the same
numbers for programs). Plain HTML from the standard library: one page, no script, readable offline."""

from __future__ import annotations

import html
import json
import logging
import math
from pathlib import Path
from typing import Any

import numpy as np

from ml.training.drift import DRIFT, OUT_OF_RANGE, FeatureDrift

log = logging.getLogger(__name__)

HTML_FILE, PNG_FILE, JSON_FILE = "drift.html", "drift.png", "drift.json"
COLUMNS = (
    "feature",
    "verdict",
    "training mean ± std",
    "training [min, max]",
    "training [q0.5 %, q99.5 %]",
    "recent mean ± std",
    "recent [min, max]",
    "PSI",
    "KS",
    "outside training range",
    "out of distribution",
)
ROW_CLASS = {OUT_OF_RANGE: "out", DRIFT: "drift"}
STYLE = """body { font-family: sans-serif; margin: 2em; color: #222 }
table { border-collapse: collapse; font-size: 90% }
th, td { border: 1px solid #ccc; padding: 3px 8px; text-align: right; white-space: nowrap }
td:first-child, td:nth-child(2) { text-align: left }
tr.out td { background: #fdd } tr.drift td { background: #ffe9b3 }
img { max-width: 100%; margin-top: 1.5em }"""


def _number(value: float) -> str:
    return "n/a" if value is None or not math.isfinite(value) else f"{value:.4g}"


def _share(value: float) -> str:
    return f"{100 * value:.1f} %"


def _cells(feature: FeatureDrift) -> list[str]:
    t, r = feature.training, feature.recent
    return [
        feature.name,
        feature.verdict,
        f"{_number(t['mean'])} ± {_number(t['std'])}",
        f"[{_number(t['min'])}, {_number(t['max'])}]",
        f"[{_number(t['q0_5'])}, {_number(t['q99_5'])}]",
        f"{_number(r['mean'])} ± {_number(r['std'])}",
        f"[{_number(r['min'])}, {_number(r['max'])}]",
        _number(feature.psi),
        _number(feature.ks),
        _share(feature.outside_range),
        _share(feature.out_of_distribution),
    ]


def html_page(context: dict[str, Any], features: list[FeatureDrift]) -> str:
    e = html.escape
    settings = context["settings"]
    head = "".join(f"<th>{e(c)}</th>" for c in COLUMNS)
    rows = "\n".join(
        f'<tr class="{ROW_CLASS.get(f.verdict, "ok")}">' + "".join(f"<td>{e(c)}</td>" for c in _cells(f)) + "</tr>"
        for f in features
    )
    offsets = ", ".join(f"partition {p} [{start}, {end})" for p, (start, end) in context["offsets"].items())
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<title>Drift of {e(context["topic"])} against model {e(context["model"])}</title>
<style>{STYLE}</style></head>
<body>
<h1>Drift of {e(context["topic"])} against model {e(context["model"])}</h1>
<p><strong>{e(context["headline"])}</strong></p>
<p>Recent: {context["readings"]} readings ({context["rejected"]} undecodable records skipped), {e(offsets)}, read
{e(context["created_at"])}. Training: {context["training_readings"]} readings of the model's training cars
({e(context["model_path"])}).</p>
<table><thead><tr>{head}</tr></thead><tbody>
{rows}
</tbody></table>
<p><strong>OUT OF RANGE</strong>: more than {_share(settings["ood_share"])} of the recent readings lie over
{settings["ood_threshold"]} training-range widths outside the training [min, max] (what the predictor flags as out
of distribution: other units, another sensor). <strong>DRIFT</strong>: PSI of at least {settings["psi_threshold"]}
(ten bins at the training sample's deciles; under 0.1 is usually read as stable). KS: the largest gap between the
two cumulative distributions (0 to 1). The model's predictions on OUT OF RANGE data mean little; on DRIFT data,
measure it again before trusting it.</p>
<img src="{PNG_FILE}" alt="per-feature distributions: recent readings against the training sample">
</body></html>
"""


def plot_distributions(path: Path, sample: np.ndarray, recent: np.ndarray, features: list[FeatureDrift]) -> None:
    """One panel per feature: the recent histogram over the training sample's, the training range shaded."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    columns = 3
    lines = math.ceil(len(features) / columns)
    fig, axes = plt.subplots(lines, columns, figsize=(5 * columns, 2.8 * lines), squeeze=False)
    for ax, (i, feature) in zip(axes.flat, enumerate(features), strict=False):
        trained, now = sample[:, i], recent[:, i][np.isfinite(recent[:, i])]
        bins = np.histogram_bin_edges(np.concatenate([trained, now]), bins=40)
        low, high = feature.training["min"], feature.training["max"]
        ax.axvspan(low, high, color="tab:green", alpha=0.12, label="training range")
        for edge in (feature.training["q0_5"], feature.training["q99_5"]):
            ax.axvline(edge, color="tab:green", linestyle="--", linewidth=0.8)
        ax.hist(trained, bins=bins, density=True, histtype="step", color="tab:blue", label="training sample")
        ax.hist(now, bins=bins, density=True, alpha=0.5, color="tab:orange", label="recent")
        color = "tab:red" if feature.verdict == OUT_OF_RANGE else "darkorange" if feature.verdict == DRIFT else "black"
        ax.set_title(f"{feature.name}: {feature.verdict} (PSI {_number(feature.psi)})", color=color, fontsize=9)
        ax.tick_params(labelsize=7)
        ax.set_yticks([])
    for ax in axes.flat[len(features) :]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def write_drift_report(
    folder: Path, context: dict[str, Any], sample: np.ndarray, recent: np.ndarray, features: list[FeatureDrift]
) -> Path:
    """drift.html, drift.png and drift.json in `folder`; returns the HTML file."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / JSON_FILE).write_text(json.dumps(context, indent=2) + "\n")
    plot_distributions(folder / PNG_FILE, sample, recent, features)
    page = folder / HTML_FILE
    page.write_text(html_page(context, features))
    log.info("drift report written: %s", page)
    return page
