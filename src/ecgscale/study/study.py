"""`Study`: one study spec and what can be done with it (plan, estimate, run, results, report)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ecgscale.study.spec import StudySpec, load_spec

if TYPE_CHECKING:
    from ecgscale.study.planner import Run
    from ecgscale.study.results import Results


@dataclass(frozen=True)
class Study:
    """A validated study spec; `Study.from_yaml("study.yaml").plan()` lists its runs."""

    spec: StudySpec

    @classmethod
    def from_yaml(cls, path: str | Path) -> Study:
        """The study of a YAML spec (errors name their path in the file)."""
        return cls(load_spec(path))

    def plan(self) -> list[Run]:
        """Every run of the study, with stable ids."""
        from ecgscale.study.planner import plan

        return plan(self.spec)

    def estimate(self) -> list[dict[str, Any]]:
        """One row per run: N, D, FLOPs per record and training FLOPs at the store's input."""
        from ecgscale.study.planner import estimate, store_info

        return estimate(self.plan(), store_info(self.spec))

    def run(
        self,
        *,
        progress: bool = True,
        mlflow_uri: str | None = None,
        mlflow_experiment: str | None = None,
        tensorboard: bool | None = None,
    ) -> Results:
        """Execute the runs that are not finished; returns the results store.

        `mlflow_uri` (e.g. "file:./mlruns") logs every run to MLflow, in `mlflow_experiment`
        (default: the spec's, else the study's name); `tensorboard` has every run write event
        files under its folder. Both override the spec's `tracking` (None: as the spec says).
        """
        from ecgscale.study.runner import run_study, with_tracking

        spec = with_tracking(
            self.spec,
            mlflow_uri=mlflow_uri,
            mlflow_experiment=mlflow_experiment,
            tensorboard=tensorboard,
        )
        return run_study(spec, progress=progress)

    def results(self) -> Results:
        """The study's results store (`OUT/results.sqlite`)."""
        from ecgscale.study.runner import results_of

        return results_of(self.spec)

    def report(self, out: str | Path | None = None) -> Path:
        """Fit the results and write the HTML report (default `OUT/report`); returns its path."""
        from ecgscale.report.html import write_report

        return write_report(self.spec, self.spec.out / "report" if out is None else out)
