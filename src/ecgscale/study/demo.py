"""`ecgscale demo`: the packaged demo study (specs/demo.yaml) from synthetic data to the report.

`quick=True` shrinks it (fewer records, the three smallest sizes, three data sizes, a shorter
budget; all four families kept) so that a test or a first look takes about two minutes; the full
demo is the README's main job.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import yaml

from ecgscale.report.html import N_BOOT, write_report
from ecgscale.study.runner import run_study
from ecgscale.study.spec import StudySpec, parse_spec


def demo_spec(out: str | Path, *, quick: bool = False) -> StudySpec:
    """The demo spec writing to `out`; `quick` keeps its structure at a fraction of the cost."""
    text = resources.files("ecgscale.study").joinpath("specs/demo.yaml").read_text()
    data = yaml.safe_load(text)
    data["out"] = str(Path(out))
    if quick:
        data["stores"]["source"]["synth"]["records"] = 600
        data["stores"]["shifted"]["synth"]["records"] = 300
        for family in data["families"]:
            family["sizes"] = family["sizes"][:3]
        data["data_fractions"] = [0.25, 0.5, 1.0]
        data["budget"] = {"epochs": 20, "patience": 1, "val_every": 200, "max_samples": 1000}
    return parse_spec(data, "demo.yaml")


def run_demo(out: str | Path, *, quick: bool = False) -> Path:
    """Run the demo study into `out` (finished runs are reused) and write its report."""
    spec = demo_spec(out, quick=quick)
    run_study(spec)
    # the quick look's 9-point fits are not identifiable anyway: 200 resamples say so as well
    return write_report(spec, Path(out) / "report", n_boot=200 if quick else N_BOOT)
