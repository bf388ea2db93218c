"""The report of a study with planted laws: tables and readings agree, truths are recovered,
nothing unidentified is printed as a number, and the page renders within 1,400 px."""

from __future__ import annotations

import html
import json
import re
import subprocess
from pathlib import Path

import numpy as np
import pytest
from planted import PLANTED

from ecgscale.report.figures import axis_reading, fastest, nice_ticks
from ecgscale.report.findings import (
    AGREE,
    DISAGREE,
    OPEN,
    Finding,
    Quantity,
    claims,
    family_findings,
    parameter,
    summary,
)
from ecgscale.report.html import study_fits
from ecgscale.scaling import Estimate, fit_axis
from ecgscale.study.runner import results_of


@pytest.fixture(scope="module")
def fits(planted_report):
    spec, _ = planted_report
    return study_fits(results_of(spec).table())[0]


def _cells(page: str) -> list[list[str]]:
    rows = re.findall(r"<tr>(.*?)</tr>", page)
    return [[html.unescape(re.sub("<[^>]+>", "", c)) for c in re.findall(r"<td[^>]*>(.*?)</td>", r)]
            for r in rows]  # fmt: skip


def test_planted_exponents_are_recovered(fits) -> None:
    covered, total = 0, 0
    for family, ((_, _, alpha, _, beta), _) in PLANTED.items():
        for name, truth in (("alpha", alpha), ("beta", beta)):
            q = fits.exponent("id", family, name)
            if q.identified:
                total += 1
                covered += q.estimate.low <= truth <= q.estimate.high
    assert total >= 6 and covered >= total - 1  # 95 % intervals: at most one miss of eight


def test_every_reading_is_the_tables_own_numbers(planted_report, fits) -> None:
    _, report = planted_report
    page = report.read_text()
    cells = _cells(page)
    # the summary names exactly the findings of each verdict; each row shows the same numbers
    found = claims(fits)
    text = summary(found)
    assert html.escape(text) in page
    for finding in found:
        named = f"{finding.question} ({finding.subject})"
        if finding.verdict == OPEN:
            assert named not in text
        else:
            before = text.split(named)[0]
            assert named in text and (finding.verdict == AGREE) == ("Disagrees:" not in before)
    assert f"Not resolved by these runs: {sum(f.verdict == OPEN for f in found)} of" in text or (
        all(f.verdict != OPEN for f in found)
    )
    for finding in found:
        row = [finding.question, finding.subject, finding.ours.text(finding.percent)]
        assert any(c[:3] == row and c[4] == finding.verdict for c in cells)
    for family in fits.roles:
        for finding in family_findings(fits, family):
            row = [finding.question, finding.ours.text(finding.percent)]
            assert any(c[:2] == row and c[3] == finding.verdict for c in cells)
    # the family a caption calls fastest has the largest identified exponent of the tables
    for kind in ("id", "ood"):
        for name in ("alpha", "beta"):
            reading = axis_reading(fits, kind, name)
            assert html.escape(reading) in page
            values = {f: fits.exponent(kind, f, name) for f in fits.roles}
            known = {f: q.estimate.value for f, q in values.items() if q.identified}
            if not known:
                assert "No family" in reading
                continue
            best = max(known, key=known.__getitem__)
            assert fastest(fits, kind, name)[0] == best
            assert f"for {best} ({name} = {values[best].text()})" in reading
            for f, q in values.items():  # every unidentified one is named with its reason
                assert q.identified or f"{f} ({q.reason})" in reading


def test_no_unidentified_number_and_no_degenerate_interval(planted_report) -> None:
    page = planted_report[1].read_text()
    assert not re.search(r"(-?[0-9.e+-]+) \[\1, \1\]", page)
    assert "not identified (" in page  # the planted OOD laws leave some exponents unidentified
    assert "nan" not in re.sub(r"<img[^>]*>", "", page).lower().split("<h2>provenance")[0]


def test_a_bound_exponent_is_not_identified_with_its_reason() -> None:
    x = np.geomspace(1e3, 1e5, 6)
    flat = fit_axis(x, np.full(6, 0.5) * np.exp(1e-4 * np.arange(6)), axis="N", n_boot=200)
    q = parameter(flat, "alpha")
    assert not q.identified and q.text().startswith("not identified (alpha ")


def test_verdict_rules() -> None:
    est = Estimate(0.5, 0.1, 0.3, 0.7)
    assert Finding("q", "f", Quantity(est), published=0.6).verdict == AGREE
    assert Finding("q", "f", Quantity(est), published=0.9).verdict == DISAGREE
    assert Finding("q", "f", Quantity(est), direction=("<", 1.0)).verdict == AGREE
    assert Finding("q", "f", Quantity(est), direction=(">", 1.0)).verdict == DISAGREE
    assert Finding("q", "f", Quantity(est), direction=("<", 0.6)).verdict == OPEN
    assert Finding("q", "f", Quantity(None, "at bound"), published=0.5).verdict == OPEN


def test_nice_ticks_label_short_and_long_spans() -> None:
    assert nice_ticks(1e3, 2e5) == [1e3, 1e4, 1e5]
    assert nice_ticks(0.55, 0.95) == pytest.approx([0.6, 0.7, 0.8, 0.9])
    assert len(nice_ticks(0.99, 1.01)) >= 2


def test_report_renders_within_a_1400_px_page(planted_report, tmp_path: Path, chromium) -> None:
    """Headless Chromium at 1,400 px: nothing overflows, every figure decodes, and the full-page
    screenshot has content (not a blank page)."""
    from PIL import Image

    report = planted_report[1]
    probe = tmp_path / "probe.html"
    script = (
        "<script>window.addEventListener('load', () => { document.body.setAttribute("
        "'data-probe', [document.documentElement.scrollWidth, ...[...document.images].map("
        "i => i.naturalWidth + 'x' + i.getBoundingClientRect().right)].join(',')); });</script>"
    )
    probe.write_text(report.read_text().replace("</body>", script + "</body>"))
    argv = chromium(tmp_path, "--window-size=1400,1000", "--hide-scrollbars")
    dom = subprocess.run(
        [*argv, "--dump-dom", probe.as_uri()],
        capture_output=True, text=True, timeout=120, check=True,
    ).stdout  # fmt: skip
    match = re.search(r'data-probe="([0-9.,x]*)"', dom)
    assert match, "the page did not finish loading in Chromium"
    width, *images = match.group(1).split(",")
    assert int(width) <= 1400
    assert len(images) == page_images(report) and images
    for item in images:
        natural, right = item.split("x")
        assert int(natural) > 300 and float(right) <= 1400
    shot = tmp_path / "report.png"
    subprocess.run(
        [*argv, f"--screenshot={shot}", report.as_uri()],
        capture_output=True, timeout=120, check=True,
    )  # fmt: skip
    pixels = np.asarray(Image.open(shot).convert("L"), dtype=np.float64)
    assert pixels.shape[1] == 1400 and pixels.std() > 10  # text and tables, not a blank page


def page_images(report: Path) -> int:
    return report.read_text().count("<img")


def test_external_models_are_probed_and_drawn_on_the_ood_plots(planted_report) -> None:
    spec, report = planted_report
    page = report.read_text()
    assert "<h2>External models</h2>" in page and "lead-energy" in page
    assert "Stars: external models" in page
    cached = list((spec.out / "external").glob("lead-energy-*.json"))
    assert len(cached) == 1
    rows = json.loads(cached[0].read_text())
    assert [r["task"] for r in rows] == [o.task for o in spec.ood]
    assert all(r["n_params"] == 24 * 24 + 24 for r in rows)
    assert all(0 < r["ood_loss"] < 1.0 for r in rows)  # a probe's BCE, better than nothing
    from ecgscale.study.external import external_points
    from ecgscale.study.runner import prepare_stores

    before = cached[0].stat().st_mtime_ns
    again = external_points(spec, prepare_stores(spec, progress=False))
    assert cached[0].stat().st_mtime_ns == before  # served from the cache
    assert again["ood_loss"].tolist() == [r["ood_loss"] for r in rows]
