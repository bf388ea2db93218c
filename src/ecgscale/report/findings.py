"""A study's answers to the questions of Li et al. (2026), each beside the published value.

Every number the report prints about a fit - in its tables and in its sentences - is a `Quantity`
made here: an `Estimate` with its 95 % interval when the data identify it, or the reason why not
(an exponent at an optimiser bound, poorly identified, a fit that could not be made). A `Finding`
pairs a quantity with the published value and a verdict; the report renders tables and readings
from the same `Finding` objects, so prose and tables cannot disagree.

Verdicts:
- a published value: "agree" when it lies in our 95 % interval, else "disagree";
- a published direction (e.g. kappa < 1, a ratio > 1): "agree" when the whole interval lies on
  the published side, "disagree" when it lies on the other side;
- "not resolved" when the quantity is not identified or the interval straddles the threshold.

Families are matched to the paper's four by architecture (model `resnet`, `beat_transformer`)
and paradigm (objective `sl`; anything else is SSL); the first family of a role in the study
answers for it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from ecgscale.scaling import Estimate, JointFit, compare_exponents
from ecgscale.scaling.analyze import MEAN_TASK, GroupAnalysis
from ecgscale.scaling.fits import FitBase

AGREE, DISAGREE, OPEN = "agree", "disagree", "not resolved"
ARCHITECTURES = {"resnet": "ResNet", "beat_transformer": "Transformer"}
SATURATION_HEADROOM = 0.02
"""Saturated in N: the loss still to gain from N (A N_max^-alpha at the largest D) is below this
share of the loss at the largest N and D (95 % upper bound); not saturated: lower bound above."""

# Li et al. 2026, as quoted in issue 13 (role -> value).
PUBLISHED_ALPHA_ID = {"Transformer-SL": 0.943, "ResNet-SL": 0.912}
PUBLISHED_BETA_ID = {"Transformer-SL": 0.129, "ResNet-SL": 0.39}
PUBLISHED_KAPPA = {
    "Transformer-SSL": 0.466,
    "Transformer-SL": 0.128,
    "ResNet-SSL": 0.270,
    "ResNet-SL": 0.133,
}
PUBLISHED_DATA_SHARE_OOD = {"Transformer-SL": 0.90, "ResNet-SL": 0.79, "Transformer-SSL": 0.27}
PUBLISHED_OOD_ALPHA_RATIO = {"SL": 1.3, "SSL": 2.5}  # ResNet / Transformer
PUBLISHED_OOD_BETA_RATIO = {"Transformer": 16.0, "ResNet": 4.0}  # SSL / SL


@dataclass(frozen=True)
class Quantity:
    """A fitted number with its interval, or `reason` why the data do not identify it."""

    estimate: Estimate | None
    reason: str = ""

    @property
    def identified(self) -> bool:
        return self.estimate is not None

    def text(self, percent: bool = False) -> str:
        """ "0.94 [0.81, 1.10]" (or "90 % [85, 94]"), or "not identified (reason)"."""
        if self.estimate is None:
            return f"not identified ({self.reason})"
        e = self.estimate
        if percent:
            return f"{100 * e.value:.0f} % [{100 * e.low:.0f}, {100 * e.high:.0f}]"
        return f"{e.value:.3g} [{e.low:.3g}, {e.high:.3g}]"


def unidentified(fit: FitBase) -> dict[str, str]:
    """Parameter name -> why `fit` does not identify it (at a bound, SE too large, interval
    undefined), from the fit's warnings and its bootstrap."""
    out: dict[str, str] = {}
    for warning in fit.warnings:
        name, _, rest = warning.partition(" ")
        if rest.startswith("reaches its bound"):
            out.setdefault(name, "at its optimiser bound")
        elif rest.startswith("is poorly identified"):
            out.setdefault(name, "bootstrap SE larger than the estimate allows")
    for name, est in fit.estimates().items():
        if not (np.isfinite(est.low) and np.isfinite(est.high)):
            out.setdefault(name, "no bootstrap interval")
    return out


def parameter(fit: FitBase | None, name: str, missing: str = "no fit") -> Quantity:
    """Parameter `name` of `fit` as a `Quantity`."""
    if fit is None:
        return Quantity(None, missing)
    if name not in fit.param_names:
        return Quantity(None, f"the fit has no {name}")
    why = unidentified(fit).get(name)
    return Quantity(None, f"{name} {why}") if why else Quantity(getattr(fit, name))


def _derived(estimate: Estimate, *sources: Quantity) -> Quantity:
    """A quantity computed from `sources`: identified only when all of them are."""
    missing = [q.reason for q in sources if not q.identified]
    if missing:
        return Quantity(None, "; ".join(dict.fromkeys(missing)))
    if not (np.isfinite(estimate.low) and np.isfinite(estimate.high)):
        return Quantity(None, "no bootstrap interval")
    return Quantity(estimate)


def ratio(fit_x: FitBase | None, fit_y: FitBase | None, name: str) -> Quantity:
    """Exponent ratio name(x) / name(y) with its bootstrap interval (`compare_exponents`)."""
    qx, qy = parameter(fit_x, name), parameter(fit_y, name)
    if not (qx.identified and qy.identified):
        return _derived(Estimate(np.nan, np.nan, np.nan, np.nan), qx, qy)
    return _derived(compare_exponents(fit_x, fit_y, param=name).ratio, qx, qy)


def n_headroom(fit: JointFit) -> Estimate:
    """A N_max^-alpha / L(N_max, D_max): the share of the loss at the largest run that more
    parameters could still remove, with its bootstrap interval."""
    n, d = fit.n_range[1], fit.d_range[1]
    point = [fit.E.value, fit.A.value, fit.B.value, fit.alpha.value, fit.beta.value]
    p = np.vstack([point, fit.samples])  # columns E, A, B, alpha, beta; row 0 the point fit
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        term = p[:, 1] * n ** -p[:, 3]
        share = term / (p[:, 0] + term + p[:, 2] * d ** -p[:, 4])
    return Estimate.from_samples(float(share[0]), share[1:])


@dataclass(frozen=True)
class Finding:
    """One comparison with the paper.

    Attributes:
        question: what is compared, e.g. "alpha (N), ID loss".
        subject: the family or pair it is about.
        ours: our quantity.
        published: the published value (None for a direction-only claim).
        direction: ("<" or ">", threshold) when the paper states a direction.
        percent: print as a percentage.
        note: how our quantity differs from the published one's definition, if it does.
    """

    question: str
    subject: str
    ours: Quantity
    published: float | None = None
    direction: tuple[str, float] | None = None
    percent: bool = False
    note: str = ""

    @property
    def verdict(self) -> str:
        e = self.ours.estimate
        if e is None:
            return OPEN
        if self.direction is not None:
            side, threshold = self.direction
            above, below = e.low > threshold, e.high < threshold
            if not (above or below):
                return OPEN
            return AGREE if above == (side == ">") else DISAGREE
        if self.published is None:
            return OPEN
        return AGREE if e.low <= self.published <= e.high else DISAGREE

    def published_text(self) -> str:
        parts = []
        if self.published is not None:
            v = self.published
            parts.append(f"{100 * v:.0f} %" if self.percent else f"{v:g}")
        if self.direction is not None:
            parts.append(f"{self.direction[0]} {self.direction[1]:g}")
        return ", ".join(parts) or "-"


@dataclass(frozen=True)
class StudyFits:
    """The fits of one study: per family, ID and OOD analyses (task-mean OOD loss, with the
    loss-to-loss fits per task); OOD analyses per "family/task"; each family's role."""

    id: Mapping[str, GroupAnalysis]
    ood: Mapping[str, GroupAnalysis]
    roles: Mapping[str, str]  # family label -> "ResNet-SL", "Transformer-SSL", ...
    ood_task: Mapping[str, GroupAnalysis] = field(default_factory=dict)

    def family_of(self, role: str) -> str | None:
        return next((f for f, r in self.roles.items() if r == role), None)

    def group(self, kind: str, family: str | None, task: str = MEAN_TASK) -> GroupAnalysis | None:
        """The ID or OOD analysis of `family` (of one OOD task when `task` is given)."""
        if kind == "ood" and task != MEAN_TASK:
            return self.ood_task.get(f"{family}/{task}")
        return (self.id if kind == "id" else self.ood).get(family or "")

    def fit(self, kind: str, family: str | None, task: str = MEAN_TASK) -> JointFit | None:
        group = self.group(kind, family, task)
        return group.fit if group is not None and isinstance(group.fit, JointFit) else None

    def transfer(self, family: str | None, task: str = MEAN_TASK) -> FitBase | None:
        group = self.ood.get(family or "")
        if group is None:
            return None
        return next((t.fit for t in group.transfer if t.task == task), None)

    def exponent(self, kind: str, family: str, name: str, task: str = MEAN_TASK) -> Quantity:
        """alpha or beta of the ID or OOD joint fit, or kappa of the loss-to-loss fit."""
        if name == "kappa":
            return parameter(self.transfer(family, task), "kappa", "no loss-to-loss fit")
        return parameter(self.fit(kind, family, task), name, "no joint fit")

    def data_share(self, kind: str, family: str, task: str = MEAN_TASK) -> Quantity:
        """Share of marginal log compute that should go to data (identified with alpha, beta)."""
        group = self.group(kind, family, task)
        if group is None or group.compute is None:
            return Quantity(None, "no joint fit")
        fit = group.fit
        return _derived(group.compute.data_share, parameter(fit, "alpha"), parameter(fit, "beta"))

    def saturation_in_n(self, family: str) -> Quantity:
        """The share of the ID loss at the largest run still removable by N (`n_headroom`)."""
        fit = self.fit("id", family)
        if fit is None:
            return Quantity(None, "no joint fit")
        return _derived(n_headroom(fit), parameter(fit, "A"), parameter(fit, "alpha"))


def roles_of(families: Mapping[str, tuple[str, str]]) -> dict[str, str]:
    """Family label -> its role ("ResNet-SL", ...) from (model, objective); families of other
    architectures get none."""
    out = {}
    for family, (model, objective) in families.items():
        if model in ARCHITECTURES:
            out[family] = f"{ARCHITECTURES[model]}-{'SL' if objective == 'sl' else 'SSL'}"
    return out


def family_findings(fits: StudyFits, family: str) -> list[Finding]:
    """The exponent table of one family beside the published values of its role."""
    role = fits.roles.get(family, "")
    sat = fits.saturation_in_n(family)
    is_sl = role.endswith("-SL")
    rows = [
        Finding("alpha (N), ID loss", family, fits.exponent("id", family, "alpha"),
                PUBLISHED_ALPHA_ID.get(role)),
        Finding("beta (D), ID loss", family, fits.exponent("id", family, "beta"),
                PUBLISHED_BETA_ID.get(role)),
        Finding("alpha (N), OOD loss", family, fits.exponent("ood", family, "alpha")),
        Finding("beta (D), OOD loss", family, fits.exponent("ood", family, "beta")),
        Finding("kappa (loss-to-loss, mean over tasks)", family,
                fits.exponent("ood", family, "kappa"), PUBLISHED_KAPPA.get(role)),
        Finding("data share of marginal compute, ID", family, fits.data_share("id", family),
                percent=True),
        Finding("data share of marginal compute, OOD", family, fits.data_share("ood", family),
                PUBLISHED_DATA_SHARE_OOD.get(role), percent=True,
                note="published on CPSC2018; ours on the task-mean OOD loss"),
        Finding("ID loss left to gain from N at the largest run", family, sat,
                direction=("<" if is_sl else ">", SATURATION_HEADROOM) if role else None,
                percent=True,
                note="published: SL saturates in N on ID, SSL does not"),
    ]  # fmt: skip
    return rows


def claims(fits: StudyFits) -> list[Finding]:
    """The paper's qualitative findings across families, each with our ratio and interval."""
    fam = fits.family_of
    out = [
        Finding("kappa < 1 (OOD loss improves more slowly than ID loss)", family,
                fits.exponent("ood", family, "kappa"), direction=("<", 1.0))
        for family in fits.roles
    ]  # fmt: skip
    for paradigm, published in PUBLISHED_OOD_ALPHA_RATIO.items():
        r, t = fam(f"ResNet-{paradigm}"), fam(f"Transformer-{paradigm}")
        if r and t:
            q = ratio(fits.fit("ood", r), fits.fit("ood", t), "alpha")
            out.append(Finding("OOD alpha ratio ResNet / Transformer", f"{r} / {t}", q,
                               published, (">", 1.0)))  # fmt: skip
    for arch, published in PUBLISHED_OOD_BETA_RATIO.items():
        ssl, sl = fam(f"{arch}-SSL"), fam(f"{arch}-SL")
        if ssl and sl:
            q = ratio(fits.fit("ood", ssl), fits.fit("ood", sl), "beta")
            out.append(Finding("OOD beta ratio SSL / SL", f"{ssl} / {sl}", q, published,
                               (">", 1.0)))  # fmt: skip
    for arch in ARCHITECTURES.values():
        ssl, sl = fam(f"{arch}-SSL"), fam(f"{arch}-SL")
        if ssl and sl:
            q = ratio(fits.transfer(ssl), fits.transfer(sl), "kappa")
            published = PUBLISHED_KAPPA[f"{arch}-SSL"] / PUBLISHED_KAPPA[f"{arch}-SL"]
            out.append(Finding("kappa ratio SSL / SL", f"{ssl} / {sl}", q, round(published, 2),
                               (">", 1.0)))  # fmt: skip
    return out


def summary(items: list[Finding]) -> str:
    """One paragraph from the verdicts of `items`: what agrees, what disagrees, how many are not
    resolved (each named by its question and families)."""

    def named(verdict: str) -> list[str]:
        return [f"{f.question} ({f.subject})" for f in items if f.verdict == verdict]

    agree, disagree, open_ = named(AGREE), named(DISAGREE), named(OPEN)
    parts = [
        f"Agrees with the published finding: {'; '.join(agree)}." if agree else "",
        f"Disagrees: {'; '.join(disagree)}." if disagree else "",
        f"Not resolved by these runs: {len(open_)} of {len(items)}." if open_ else "",
    ]
    return " ".join(p for p in parts if p) or "No finding to compare."
