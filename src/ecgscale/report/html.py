"""The study report: fits of every family, figures with a one-sentence reading each, tables, all
in one self-contained HTML file (figures embedded as PNG data URIs) plus the figure files and a
JSON of every fit."""

from __future__ import annotations

import base64
import html
import io
import json
import re
import time
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from ecgscale.errors import UserError
from ecgscale.fileio import atomic_write
from ecgscale.report import figures
from ecgscale.scaling.analyze import GroupAnalysis, fit_results
from ecgscale.study.spec import StudySpec

N_BOOT = 1000

_STYLE = """
body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;color:#222}
table{border-collapse:collapse;font-size:13px;margin:1em 0}
td,th{border:1px solid #ccc;padding:3px 7px;text-align:right}
th{background:#f3f3f3} td:first-child,th:first-child{text-align:left}
figure{margin:1.5em 0} figcaption{font-size:14px;color:#333;margin-top:.4em}
.warn{color:#9a5b00;font-size:13px}
"""


def _fits(
    table: pd.DataFrame, target: str, transfer: bool
) -> tuple[dict[str, GroupAnalysis], dict[str, str]]:
    """Fits per family, and why a family whose points cannot support a fit was left out."""
    out: dict[str, GroupAnalysis] = {}
    skipped: dict[str, str] = {}
    for family, rows in table.groupby("family", sort=False):
        try:
            with np.errstate(over="ignore", invalid="ignore"):  # unidentifiable bootstrap draws
                (analysis,) = fit_results(
                    rows, target=target, by=["family"], transfer=transfer, n_boot=N_BOOT
                )
        except UserError as exc:
            skipped[str(family)] = str(exc)
            continue
        out[str(family)] = analysis
    return out, skipped


def _png(fig: Figure, path: Path) -> str:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    plt.close(fig)
    data = buffer.getvalue()
    path.write_bytes(data)
    return base64.b64encode(data).decode()


def _estimate(e: Any) -> str:
    return f"{e.value:.3g} [{e.low:.3g}, {e.high:.3g}]"


def _exponent_table(fits: dict[str, GroupAnalysis], skipped: dict[str, str], target: str) -> str:
    rows = [
        f"<tr><td>{html.escape(f)}</td><td colspan='8' class='warn'>not fitted: "
        f"{html.escape(why)}</td></tr>"
        for f, why in skipped.items()
    ]
    for family, g in fits.items():
        est = g.fit.estimates()
        law = "joint" if "beta" in est else f"axis {g.fit.axis}"
        alpha = est.get("alpha")
        beta = est.get("beta")
        rows.append(
            "<tr>"
            + "".join(
                f"<td>{html.escape(str(c))}</td>"
                for c in (
                    family,
                    law,
                    g.n_runs,
                    _estimate(est["E"]),
                    _estimate(alpha) if alpha else "-",
                    _estimate(beta) if beta else "-",
                    f"{g.fit.r2_log:.3f}",
                    "yes" if g.saturation.saturated else "no",
                    "; ".join(g.fit.warnings + g.notes) or "-",
                )
            )
            + "</tr>"
        )
    head = "".join(
        f"<th>{h}</th>"
        for h in (
            "family",
            "law",
            "runs",
            "E",
            "alpha (N)",
            "beta (D)",
            "R² (log)",
            "saturated",
            "warnings",
        )
    )
    return (
        f"<h3>{html.escape(target)}: exponents with 95 % bootstrap intervals</h3>"
        f"<table><tr>{head}</tr>{''.join(rows)}</table>"
    )


def _task_table(table: pd.DataFrame) -> str:
    ood = table[table["task"] != "id"]
    if ood.empty:
        return "<p>No OOD tasks.</p>"
    pivot = ood.pivot_table(
        index=["family", "size", "n_samples"], columns="task", values="ood_loss", aggfunc="mean"
    )
    return pivot.to_html(float_format=lambda v: f"{v:.4f}", border=0)


def write_report(spec: StudySpec, out: str | Path) -> Path:
    """Fit the study's results and write `out/report.html`, `out/*.png` and `out/fits.json`."""
    from ecgscale.study.runner import results_of

    results = results_of(spec)
    table = results.table()
    if table.empty:
        raise UserError(f"study {spec.name}: no finished runs in {results.path}; run it first")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    id_fits, id_skipped = _fits(table, "id_loss", transfer=False)
    ood_table = table[table["task"] != "id"]
    ood_fits, ood_skipped = _fits(ood_table, "ood_loss", transfer=True)
    sections: list[tuple[str, Figure, str]] = []
    for target, fits, data in (("id_loss", id_fits, table), ("ood_loss", ood_fits, ood_table)):
        if data.empty or data[target].isna().all():
            continue
        for axis in ("n_params", "n_samples"):
            fig, reading = figures.loss_vs_axis(data, fits, target, axis)
            sections.append((f"{target}_vs_{'N' if axis == 'n_params' else 'D'}", fig, reading))
    if ood_fits:
        fig, reading = figures.transfer_plot(table, ood_fits)
        sections.append(("loss_to_loss", fig, reading))
    if table["id_loss"].notna().any():
        fig, reading = figures.compute_plot(table, id_fits, "id_loss")
        sections.append(("compute_optimal_id", fig, reading))
    label = figures.label_scaling_plot(results.label_table())
    if label is not None:
        sections.append(("label_scaling", *label))

    runs = results.runs()
    done = runs[runs["status"] == "done"]
    hours = (done["train_seconds"].sum() + done["eval_seconds"].sum()) / 3600
    body = [
        f"<h1>Scaling study: {html.escape(spec.name)}</h1>",
        f"<p>{len(done)} of {len(runs)} runs finished ({hours:.2f} CPU-hours of training and "
        f"evaluation); {len(spec.families)} families, pre-training store "
        f"<code>{html.escape(spec.pretrain_store)}</code> (label set "
        f"<code>{html.escape(spec.label_set)}</code>), OOD tasks: "
        f"{html.escape(', '.join(f'{o.task} on {o.store}' for o in spec.ood)) or 'none'}. "
        f"Written {time.strftime('%Y-%m-%d %H:%M')}.</p>",
        _exponent_table(id_fits, id_skipped, "ID loss"),
    ]
    if not ood_table.empty:
        body.append(_exponent_table(ood_fits, ood_skipped, "OOD loss (mean over tasks)"))
    for name, fig, reading in sections:
        data = _png(fig, out / f"{name}.png")
        body.append(
            f'<figure><img alt="{name}" src="data:image/png;base64,{data}">'
            f"<figcaption>{html.escape(reading)}</figcaption></figure>"
        )
    body.append("<h2>OOD test loss per task</h2>" + _task_table(table))
    design = spec.out / "analysis" / "design.json"
    if design.is_file():  # a design-space study analysed with `ecgscale design analyze`
        from ecgscale.design.report import design_section

        body.append(_inline_images(design_section(design).html, design.parent, out))
    page = (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(spec.name)}"
        f"</title><style>{_STYLE}</style></head><body>{''.join(body)}</body></html>"
    )
    fits_json = {
        "id": {f: g.to_dict() for f, g in id_fits.items()},
        "ood": {f: g.to_dict() for f, g in ood_fits.items()},
    }
    atomic_write(out / "fits.json", json.dumps(fits_json, indent=2, default=float))
    atomic_write(out / "report.html", page)
    return out / "report.html"


def _inline_images(page: str, folder: Path, out: Path) -> str:
    """Embed the PNG files `page` references by name (in `folder`) as data URIs, and copy them to
    `out` with the report's own figures."""

    def embed(match: re.Match[str]) -> str:
        path = folder / html.unescape(match.group(1))
        data = path.read_bytes()
        (out / path.name).write_bytes(data)
        return f'src="data:image/png;base64,{base64.b64encode(data).decode()}"'

    return re.sub(r'src="([^":]+\.png)"', embed, page)
