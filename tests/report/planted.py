"""A study with planted scaling laws and no training: results written straight into its
results store, so that report tests know the truth and run in seconds."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ecgscale.study.planner import plan
from ecgscale.study.results import Results
from ecgscale.study.spec import StudySpec, parse_spec

# family -> (E, A, alpha, B, beta) of the ID law, (E_ood, K, kappa) of the transfer to OOD
PLANTED = {
    "ResNet-SL": ((0.20, 3.0, 0.45, 6.0, 0.35), (0.30, 0.9, 0.30)),
    "ResNet-SSL": ((0.50, 8.0, 0.40, 9.0, 0.60), (0.25, 1.1, 0.60)),
    "Transformer-SL": ((0.15, 2.0, 0.30, 5.0, 0.30), (0.35, 0.8, 0.20)),
    "Transformer-SSL": ((0.40, 6.0, 0.25, 8.0, 0.55), (0.30, 1.0, 0.50)),
}
MODELS = {
    "ResNet-SL": ("resnet", "sl"),
    "ResNet-SSL": ("resnet", "cmsc"),
    "Transformer-SL": ("beat_transformer", "sl"),
    "Transformer-SSL": ("beat_transformer", "masked"),
}
TASKS = ("synth_extra", "synth_sex")


def planted_spec(out: Path) -> StudySpec:
    sizes = ["2K", "6.3K", "20K", "63K", "200K"]
    return parse_spec(
        {
            "name": "planted",
            "out": str(out),
            "stores": {"source": {"synth": {"records": 5000}}},
            "pretrain_store": "source",
            "label_set": "code",
            "ood": [{"task": t, "store": "source"} for t in TASKS],
            "families": [
                {"name": f, "model": m, "objective": o, "sizes": sizes}
                for f, (m, o) in MODELS.items()
            ],
            "data_fractions": [0.03, 0.1, 0.3, 1.0],
            "budget": {"epochs": 1},
        }
    )


def write_planted(spec: StudySpec, noise: float = 0.01, seed: int = 0) -> Results:
    """Finish every run of `spec` with losses from `PLANTED` times log-normal noise."""
    rng = np.random.default_rng(seed)
    results = Results(spec.out / "results.sqlite")
    runs = plan(spec)
    results.add_planned(runs)
    for run in runs:
        (e, a, alpha, b, beta), (e_ood, k, kappa) = PLANTED[run.family]
        n = float(run.target_params)
        d = round(4000 * run.config["data_fraction"])
        excess = a * n**-alpha + b * d**-beta
        id_loss = (e + excess) * np.exp(noise * rng.standard_normal())
        metrics = [("id", "loss", id_loss)]
        for shift, task in enumerate(TASKS):
            ood = (e_ood + 0.05 * shift + k * excess**kappa) * np.exp(noise * rng.standard_normal())
            metrics.append((task, "loss", ood))
        result = {
            "train_seconds": 1.0,
            "eval_seconds": 0.5,
            "n_params": n,
            "n_samples": d,
            "samples_seen": d,
            "flops_per_record": 6 * n,
            "train_flops": 6 * n * d,
            "id_loss": id_loss,
            "pretext_loss": float("nan"),
        }
        results.claim(run.run_id, "planted")
        results.finish(run.run_id, result, metrics)
    return results
