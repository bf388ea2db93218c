"""The study report: one self-contained HTML page that reads like a paper's results section.

Sections: summary; findings against Li et al. (2026) (`findings.claims`); one exponent table per
family beside the published values (`findings.family_findings`); scaling with N and D; loss-to-loss
transfer with per-task kappa; compute-optimal allocation with per-task data shares; label scaling;
the run table; provenance. Figures are embedded as PNG data URIs and also written beside the page,
with `fits.json` holding every fit. All numbers in sentences and tables come from the same
`findings` objects.
"""

from __future__ import annotations

import base64
import functools
import html
import io
import json
import multiprocessing
import os
import platform
import re
import subprocess
import time
from collections.abc import Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch
from matplotlib.figure import Figure

import ecgscale
from ecgscale.errors import UserError
from ecgscale.fileio import atomic_write
from ecgscale.report import figures
from ecgscale.report.findings import (
    Finding,
    StudyFits,
    claims,
    family_findings,
    parameter,
    roles_of,
    summary,
)
from ecgscale.scaling.analyze import MEAN_TASK, FitCache, GroupAnalysis, fit_results
from ecgscale.study.spec import StudySpec

N_BOOT = 1000

_STYLE = """
body{font-family:system-ui,sans-serif;max-width:1240px;margin:2em auto;padding:0 1em;color:#222;
line-height:1.45}
h2{border-bottom:1px solid #ddd;padding-bottom:.2em;margin-top:2em}
table{border-collapse:collapse;font-size:13px;margin:.6em 0 1.2em}
td,th{border:1px solid #ccc;padding:3px 7px;text-align:right;vertical-align:top}
th{background:#f3f3f3} td:first-child,th:first-child{text-align:left}
td.text{text-align:left}
img{max-width:100%;height:auto}
figure{margin:1.2em 0} figcaption{font-size:14px;color:#333;margin-top:.4em;max-width:1150px}
.agree{color:#176b2c;font-weight:600} .disagree{color:#a31515;font-weight:600}
.open{color:#777} .warn{color:#8a5300;font-size:13px}
details{font-size:13px;margin:.2em 0} summary{cursor:pointer}
"""


def _fits(
    table: pd.DataFrame,
    target: str,
    by: Sequence[str],
    transfer: bool,
    cache: FitCache,
    n_boot: int,
) -> tuple[dict[str, GroupAnalysis], dict[str, str]]:
    """Fits per group; groups whose points cannot support a fit map to the reason."""
    out: dict[str, GroupAnalysis] = {}
    skipped: dict[str, str] = {}
    for key, rows in table.groupby(list(by), sort=False):
        label = "/".join(map(str, key if isinstance(key, tuple) else (key,)))
        try:
            with np.errstate(over="ignore", invalid="ignore"):  # unidentifiable bootstrap draws
                (analysis,) = fit_results(
                    rows, target=target, by=list(by), transfer=transfer, cache=cache, n_boot=n_boot
                )
        except UserError as exc:
            skipped[label] = str(exc)
            continue
        out[label] = analysis
    return out, skipped


def _png(fig: Figure, path: Path) -> str:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    plt.close(fig)
    data = buffer.getvalue()
    path.write_bytes(data)
    return base64.b64encode(data).decode()


def _esc(value: object) -> str:
    return html.escape(str(value))


def _table(head: Iterable[str], rows: Iterable[Iterable[str]], text_cols: int = 1) -> str:
    """An HTML table from already-escaped cells; the first `text_cols` columns align left."""
    header = "".join(f"<th>{h}</th>" for h in head)
    body = "".join(
        "<tr>"
        + "".join(
            f"<td class='text'>{c}</td>" if i < text_cols else f"<td>{c}</td>"
            for i, c in enumerate(row)
        )
        + "</tr>"
        for row in rows
    )
    return f"<table><tr>{header}</tr>{body}</table>"


def _verdict(finding: Finding) -> str:
    css = {"agree": "agree", "disagree": "disagree"}.get(finding.verdict, "open")
    return f"<span class='{css}'>{finding.verdict}</span>"


def _findings_table(items: list[Finding], subject: bool) -> str:
    head = ["quantity"] + (["families"] if subject else []) + ["ours, 95 % interval"]
    head += ["Li et al. 2026", "verdict", "note"]
    rows = [
        [_esc(f.question)]
        + ([_esc(f.subject)] if subject else [])
        + [_esc(f.ours.text(f.percent)), _esc(f.published_text()), _verdict(f), _esc(f.note)]
        for f in items
    ]
    return _table(head, rows, text_cols=2 if subject else 1)


def warning_line(label: str, warnings: Sequence[str]) -> str:
    """One short line per fit ("ResNet-SL ID fit: 2 warnings - alpha at its bound; ...") with the
    full warnings folded away."""
    if not warnings:
        return ""
    short = "; ".join(dict.fromkeys(w.split(":")[0].split(" (")[0] for w in warnings))
    if len(short) > 110:
        short = short[:107] + "..."
    items = "".join(f"<li>{_esc(w)}</li>" for w in warnings)
    return (
        f"<details class='warn'><summary>{_esc(label)}: {len(warnings)} warning"
        f"{'s' if len(warnings) > 1 else ''} - {_esc(short)}</summary><ul>{items}</ul></details>"
    )


def _fit_warnings(fits: StudyFits, family: str) -> str:
    lines = []
    for kind, groups in (("ID", fits.id), ("OOD", fits.ood)):
        group = groups.get(family)
        if group is None:
            continue
        lines.append(warning_line(f"{kind} fit", [*group.fit.warnings, *group.notes]))
        for t in group.transfer:
            if t.task == MEAN_TASK:
                lines.append(warning_line("loss-to-loss fit (mean over tasks)", t.fit.warnings))
    return "".join(lines)


def _per_task_table(fits: StudyFits) -> str:
    """Per family x task: kappa and K of the loss-to-loss fit and the OOD data share."""
    rows = [
        [
            _esc(family),
            _esc(t.task),
            _esc(fits.exponent("ood", family, "kappa", t.task).text()),
            _esc(parameter(t.fit, "K").text()),
            _esc(fits.data_share("ood", family, t.task).text(percent=True)),
        ]
        for family, group in fits.ood.items()
        for t in group.transfer
    ]
    head = ["family", "task", "kappa", "K", "data share of marginal compute (OOD)"]
    return _table(head, rows, text_cols=2)


def _run_table(runs: pd.DataFrame, table: pd.DataFrame) -> str:
    ood = table[table["task"] != "id"].groupby("run_id")["ood_loss"].mean()
    rows = []
    for r in runs.itertuples():
        rows.append(
            [
                _esc(r.family),
                _esc(r.size),
                f"{r.n_params:,.0f}" if pd.notna(r.n_params) else "-",
                f"{r.n_samples:,.0f}" if pd.notna(r.n_samples) else "-",
                _esc(r.seed),
                f"{r.samples_seen / r.n_samples:.1f}" if pd.notna(r.n_samples) else "-",
                f"{r.train_flops:.3g}" if pd.notna(r.train_flops) else "-",
                f"{r.id_loss:.4g}" if pd.notna(r.id_loss) else "-",
                f"{ood.get(r.run_id, np.nan):.4g}",
                f"{(r.train_seconds or 0) + (r.eval_seconds or 0):.0f}",
                _esc(r.status),
            ]
        )
    head = ["family", "size", "N", "D", "seed", "epochs", "train FLOPs", "ID loss"]
    head += ["OOD loss (mean)", "seconds", "status"]
    return _table(head, rows, text_cols=2)


def _git_commit() -> str:
    try:
        out = subprocess.run(
            ["git", "-C", str(Path(ecgscale.__file__).parent), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
        )
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    dirty = subprocess.run(
        ["git", "-C", str(Path(ecgscale.__file__).parent), "status", "--porcelain", "-uno"],
        capture_output=True,
        text=True,
        timeout=10,
    ).stdout.strip()
    commit = out.stdout.strip() if out.returncode == 0 else "not a git checkout"
    return commit + (" (with uncommitted changes)" if dirty and out.returncode == 0 else "")


def _provenance(spec: StudySpec, runs: pd.DataFrame) -> str:
    from ecgscale.data.store import Store

    done = runs[runs["status"] == "done"]
    hours = (done["train_seconds"].sum() + done["eval_seconds"].sum()) / 3600
    gpu = spec.device.startswith("cuda")
    rows = [
        ["ecgscale", _esc(ecgscale.__version__)],
        ["git commit", _esc(_git_commit())],
        ["torch", _esc(torch.__version__)],
        ["python, platform", _esc(f"{platform.python_version()}, {platform.platform()}")],
        ["seeds", _esc(", ".join(map(str, spec.seeds)))],
        ["device", _esc(spec.device)],
        ["CPU hours (training + evaluation)", f"{0 if gpu else hours:.2f}"],
        ["GPU hours", f"{hours if gpu else 0:.2f}"],
    ]
    for name, item in spec.stores.items():
        path = item.path if item.path is not None else spec.out / "stores" / name
        try:
            checksum = Store(path).checksum
        except UserError as exc:
            checksum = f"not readable: {exc}"
        rows.append([_esc(f"store {name} checksum"), f"<code>{_esc(checksum)}</code>"])
    return _table(["what", "value"], rows)


FamilyFits = tuple[dict[str, GroupAnalysis], dict[str, str]]


def _family_fits(
    table: pd.DataFrame, n_boot: int = N_BOOT
) -> tuple[FamilyFits, FamilyFits, FamilyFits]:
    """(ID, per-task OOD, task-mean OOD with transfers) fits of one family's rows, sharing one
    `FitCache`: the transfer fits reuse the ID, OOD and per-task fits of the same runs."""
    cache = FitCache()
    ood_table = table[table["task"] != "id"]
    return (
        _fits(table, "id_loss", ["family"], False, cache, n_boot),
        _fits(ood_table, "ood_loss", ["family", "task"], False, cache, n_boot),
        _fits(ood_table, "ood_loss", ["family"], True, cache, n_boot),
    )


def study_fits(table: pd.DataFrame, n_boot: int = N_BOOT) -> tuple[StudyFits, dict[str, str]]:
    """ID and OOD fits per family (and OOD per family x task) with `n_boot` bootstrap resamples,
    and why groups were skipped. Families are independent, so they are fitted in parallel
    processes (one per CPU at most)."""
    fit_family = functools.partial(_family_fits, n_boot=n_boot)
    groups = [rows for _, rows in table.groupby("family", sort=False)]
    workers = min(len(groups), len(os.sched_getaffinity(0)))
    if workers > 1:
        with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("fork")) as pool:
            parts = list(pool.map(fit_family, groups))
    else:
        parts = [fit_family(rows) for rows in groups]
    (id_fits, id_skipped), (task_fits, _), (ood_fits, ood_skipped) = (
        ({k: v for part in parts for k, v in part[i][0].items()},
         {k: v for part in parts for k, v in part[i][1].items()})
        for i in range(3)
    )  # fmt: skip
    models = table.groupby("family", sort=False)[["model", "objective"]].first()
    roles = roles_of({str(f): (r.model, r.objective) for f, r in models.iterrows()})
    skipped = {f"{f} (ID)": w for f, w in id_skipped.items()}
    skipped |= {f"{f} (OOD)": w for f, w in ood_skipped.items()}
    return StudyFits(id_fits, ood_fits, roles, task_fits), skipped


def _external(spec: StudySpec) -> pd.DataFrame:
    """The spec's external models probed on its OOD tasks (empty without any)."""
    from ecgscale.study.external import external_points
    from ecgscale.study.runner import prepare_stores

    stores = prepare_stores(spec, progress=False) if spec.external else {}
    return external_points(spec, stores)


def _external_table(external: pd.DataFrame) -> str:
    """One row per external model: N, the OOD test loss of each task and their mean."""
    tasks = list(dict.fromkeys(external["task"]))
    rows = []
    for name, group in external.groupby("name", sort=False):
        losses = group.set_index("task")["ood_loss"]
        rows.append(
            [str(name), figures.format_count(group["n_params"].iloc[0])]
            + [f"{losses[t]:.4f}" for t in tasks]
            + [f"{losses.mean():.4f}"]
        )
    note = (
        "<p>Linear probes of each external model's frozen embeddings on the study's OOD tasks, "
        "with the runs' probe settings; N is the external encoder's parameter count.</p>"
    )
    return note + _table(["model", "N", *(f"{t} loss" for t in tasks), "mean loss"], rows)


def write_report(spec: StudySpec, out: str | Path, *, n_boot: int = N_BOOT) -> Path:
    """Fit the study's results (`n_boot` bootstrap resamples per fit) and write
    `out/report.html`, `out/*.png` and `out/fits.json`."""
    from ecgscale.study.runner import results_of

    results = results_of(spec)
    table = results.table()
    if table.empty:
        raise UserError(f"study {spec.name}: no finished runs in {results.path}; run it first")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    fits, skipped = study_fits(table, n_boot)
    runs = results.runs()
    done = runs[runs["status"] == "done"]
    ood_table = table[table["task"] != "id"]

    def figure(name: str, fig: Figure, caption: str) -> str:
        data = _png(fig, out / f"{name}.png")
        return (
            f'<figure><img alt="{_esc(name)}" src="data:image/png;base64,{data}">'
            f"<figcaption>{_esc(caption)}</figcaption></figure>"
        )

    per_family = done.groupby("family", sort=False)
    counts = "; ".join(
        f"{f}: {g['n_params'].nunique()} N ({figures.format_count(g['n_params'].min())}-"
        f"{figures.format_count(g['n_params'].max())}) x {g['n_samples'].nunique()} D "
        f"({g['n_samples'].min():,.0f}-{g['n_samples'].max():,.0f}) x {g['seed'].nunique()} seeds"
        for f, g in per_family
    )
    body = [
        f"<h1>Scaling study: {_esc(spec.name)}</h1>",
        f"<p>{len(done)} of {len(runs)} runs finished; pre-training store "
        f"<code>{_esc(spec.pretrain_store)}</code> (label set <code>{_esc(spec.label_set)}"
        f"</code>); OOD tasks: {_esc(', '.join(f'{o.task} on {o.store}' for o in spec.ood))}. "
        f"Grid: {_esc(counts)}. ID loss is each run's own objective on the pre-training store's "
        "test split (BCE of the SL head; CMSC or masked-beat loss of SSL runs), so ID values "
        "compare within a family only; OOD loss is the test BCE of linear probes on frozen "
        f"embeddings. Written {time.strftime('%Y-%m-%d %H:%M')}.</p>",
    ]
    if skipped:
        body.append(
            "".join(
                f"<p class='warn'>{_esc(f)} not fitted: {_esc(why)}</p>"
                for f, why in skipped.items()
            )
        )
    found = claims(fits)
    body.append("<h2>Findings against Li et al. (2026)</h2>")
    body.append(
        "<p>Verdicts: <i>agree</i> when our 95 % bootstrap interval contains the published value "
        "or lies wholly on the published side of a stated threshold, <i>disagree</i> when it "
        "excludes it, <i>not resolved</i> when the data do not identify the quantity or the "
        "interval straddles the threshold.</p>"
    )
    if found:
        body.append(f"<p>{_esc(summary(found))}</p>")
        body.append(_findings_table(found, subject=True))
    body.append("<h2>Exponents per family</h2>")
    for family in dict.fromkeys(done["family"]):
        role = fits.roles.get(family)
        body.append(f"<h3>{_esc(family)}" + (f" ({_esc(role)})" if role else "") + "</h3>")
        body.append(_findings_table(family_findings(fits, family), subject=False))
        body.append(_fit_warnings(fits, family))

    external = _external(spec)
    body.append("<h2>Scaling with parameters and data</h2>")
    for target, data in (("id_loss", table), ("ood_loss", ood_table)):
        if data.empty or data[target].isna().all():
            continue
        for axis in ("n_params", "n_samples"):
            name = f"{target}_vs_{'N' if axis == 'n_params' else 'D'}"
            drawn = figures.loss_vs_axis(data, fits, target, axis, external)
            body.append(figure(name, *drawn))
    if not external.empty:
        body.append("<h2>External models</h2>" + _external_table(external))
    if fits.ood:
        body.append("<h2>Loss-to-loss transfer</h2>")
        body.append(figure("loss_to_loss", *figures.transfer_plot(table, fits)))
        body.append("<h3>Per task</h3>" + _per_task_table(fits))
    body.append("<h2>Compute-optimal allocation</h2>")
    for target, data in (("id_loss", table), ("ood_loss", ood_table)):
        if not data.empty and data[target].notna().any():
            name = f"compute_optimal_{target.split('_')[0]}"
            body.append(figure(name, *figures.compute_plot(data, fits, target)))
    label = figures.label_scaling_plot(results.label_table())
    if label is not None:
        body.append("<h2>Label scaling</h2>" + figure("label_scaling", *label))
    body.append(
        f"<h2>Runs</h2><details><summary>{len(runs)} runs (click to show)</summary>"
        f"{_run_table(runs, table)}</details>"
    )
    body.append("<h2>Provenance</h2>" + _provenance(spec, runs))
    design = spec.out / "analysis" / "design.json"
    if design.is_file():  # a design-space study analysed with `ecgscale design analyze`
        from ecgscale.design.report import design_section

        body.append(_inline_images(design_section(design).html, design.parent, out))
    page = (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{_esc(spec.name)}"
        f"</title><style>{_STYLE}</style></head><body>{''.join(body)}</body></html>"
    )
    fits_json = {
        "id": {f: g.to_dict() for f, g in fits.id.items()},
        "ood": {f: g.to_dict() for f, g in fits.ood.items()},
        "ood_per_task": {k: g.to_dict() for k, g in fits.ood_task.items()},
        "findings": [
            {"question": f.question, "subject": f.subject, "ours": f.ours.text(f.percent),
             "published": f.published_text(), "verdict": f.verdict}
            for f in found
            + [x for fam in dict.fromkeys(done["family"]) for x in family_findings(fits, fam)]
        ],
    }  # fmt: skip
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
