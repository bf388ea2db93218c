"""The design-space section of the study report, built from `design.json` and its figures.

`design_section(path)` returns the HTML fragment (a `<section>`; figures referenced by file name,
relative to the folder of `design.json`) and the figure files, so the report module can copy the
figures next to its page and embed the fragment.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from html import escape
from pathlib import Path
from typing import Any

from ecgscale.errors import UserError

SECTION_FILE = "design_section.html"


@dataclass(frozen=True)
class DesignSection:
    """An HTML `<section>` and the figure files it references (by name)."""

    html: str
    figures: list[Path]


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}g}"
    return escape(str(value))


def _table(header: list[str], rows: list[list[str]]) -> str:
    head = "".join(f"<th>{escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _figure(name: str | None, caption: str) -> str:
    if not name:
        return ""
    return (
        f'<figure><img src="{escape(name)}" alt="{escape(caption)}" style="max-width:100%">'
        f"<figcaption>{escape(caption)}</figcaption></figure>"
    )


def _analysis_html(group: str, analysis: dict[str, Any], figures: dict[str, str]) -> str:
    cv = analysis["cv"]
    rows = []
    for imp in analysis["ranking"]:
        direction = imp["direction"]
        rows.append(
            [
                str(imp["rank"]),
                escape(imp["feature"]),
                f"{imp['mean_abs_shap']:.4f}",
                f"[{_fmt(imp['low'])}, {_fmt(imp['high'])}]",
                f"{imp['rank_low']}-{imp['rank_high']}",
                "-" if direction is None else f"{direction:+.2f}",
                f"{imp['permutation']:.3f} ± {imp['permutation_sd']:.3f}",
            ]
        )
    header = [
        "rank",
        "feature",
        "mean |SHAP|",
        "95 % bootstrap",
        "rank range",
        "direction",
        "permutation (R² drop)",
    ]
    return (
        f"<h3>{escape(group)}: {analysis['n']} networks</h3>"
        f"<p>Surrogate ({escape(analysis['surrogate'])}), {cv['folds']}-fold out-of-fold "
        f"Pearson r = {cv['pearson_r']:.3f}, R² = {cv['r2']:.3f}; Spearman agreement of the "
        f"SHAP and permutation rankings {_fmt(analysis['rank_agreement_shap_vs_permutation'])}. "
        "Direction: Spearman correlation of a feature's values with its SHAP values (positive: "
        "larger values predict better performance).</p>"
        + _table(header, rows)
        + _figure(figures.get(f"beeswarm_{group}"), f"SHAP beeswarm ({group})")
        + _figure(figures.get(f"ranking_{group}"), f"mean |SHAP| and permutation ({group})")
        + _figure(figures.get(f"marginals_{group}"), f"marginal effects ({group})")
        + _figure(figures.get(f"surrogate_{group}"), f"surrogate cross-validation ({group})")
    )


def _rules_html(rules: dict[str, Any]) -> str:
    laws = [
        [
            escape(name),
            f"{law['coefficient']:.3g}",
            f"{law['exponent']:.3f} [{law['exponent_low']:.3f}, {law['exponent_high']:.3f}]",
            f"{law['r2']:.2f}",
            str(law["n"]),
        ]
        for name, law in rules["laws"].items()
    ]
    recs = [
        [
            f"{r['budget']:.3g}",
            f"{r['flops']:.3g} ({r['fill']:.2f})" + ("" if r["within_budget"] else " OVER"),
            f"{r['params']:.3g}",
            str(r["config"]["depth"]),
            str(r["stages"]),
            str(r["final_width"]),
            escape(r["template"]),
            _fmt(r["predicted"]) + (" (extrapolated)" if r["extrapolated"] else ""),
            escape(json.dumps(r["config"])),
        ]
        for r in rules["recommendations"]
    ]
    return (
        "<h3>Scaling rules along the Pareto front</h3>"
        + f"<p>{len(rules['front'])} networks on the front, {len(rules['near_front'])} within "
        + f"{rules['tolerance']:g} of it; the laws y = coefficient x FLOPs^exponent are fitted to "
        + "the latter.</p>"
        + _table(["quantity", "coefficient", "exponent [95 %]", "R²", "front points"], laws)
        + "<h3>Recommended networks</h3>"
        + _table(
            [
                "budget",
                "measured FLOPs (fill)",
                "N",
                "depth",
                "stages",
                "width",
                "template",
                "predicted",
                "config",
            ],
            recs,
        )
    )


def design_section(summary_path: str | Path) -> DesignSection:
    """The report section of the analysis in `summary_path` (`design.json`)."""
    summary_path = Path(summary_path)
    if not summary_path.is_file():
        raise UserError(f"{summary_path}: no design analysis (run `ecgscale design analyze`)")
    summary = json.loads(summary_path.read_text())
    figures = summary["figures"]
    lo, hi = summary["flops_range"]
    baselines = [
        [
            escape(b["family"]),
            escape(b["name"]),
            f"{b['params']:.3g}",
            f"{b['flops']:.3g}",
            f"{b['perf']:.3f}",
        ]
        for b in summary["baselines"]
    ]
    parts = [
        '<section id="design-space">',
        "<h2>Design-space exploration</h2>",
        f"<p>{summary['runs']} sampled networks, {lo:.3g}-{hi:.3g} forward FLOPs per record; "
        f"metric {escape(summary['metric'])} on the test fold (nothing was tuned on it).</p>",
        _figure(figures.get("pareto"), "performance against forward FLOPs per record"),
    ]
    if baselines:
        parts.append(_table(["baseline", "size", "N", "FLOPs", summary["metric"]], baselines))
    for group, analysis in summary["analyses"].items():
        parts.append(_analysis_html(group, analysis, figures))
    parts.append(_rules_html(summary["rules"]["all"]))
    parts.append(_figure(figures.get("laws"), "depth and width of the front against FLOPs"))
    parts.append("</section>")
    files = [summary_path.parent / name for name in figures.values()]
    return DesignSection("\n".join(parts), files)


def write_section(summary_path: str | Path) -> Path:
    """Write the section next to `design.json` as a standalone page; returns its path."""
    summary_path = Path(summary_path)
    section = design_section(summary_path)
    path = summary_path.parent / SECTION_FILE
    path.write_text(
        "<!doctype html><html><head><meta charset='utf-8'><title>design space</title>"
        "<style>table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:2px 6px;"
        "font-size:12px}</style></head><body>" + section.html + "</body></html>"
    )
    return path
