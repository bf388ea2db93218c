"""Trainer options: label scaling (`label_top_k`) and the SGD optimisers."""

from __future__ import annotations

import json

import numpy as np

from ecgscale.data.store import Store
from ecgscale.evaluate.id_eval import evaluate_id
from ecgscale.train import pretrain
from ecgscale.train.checkpoint import load_tensors


def test_top_k_classes_are_trained_recorded_and_evaluated(config, small_store: Store) -> None:
    result = pretrain(config(label_top_k=2, epochs=1), progress=False)
    counts = small_store.labels("code")[small_store.split_indices("train")].sum(0).astype(int)
    names = small_store.label_sets["code"]
    expected = sorted(names, key=lambda c: (-counts[names.index(c)], c))[:2]
    tensors, meta = load_tensors(f"{result.out}/best.safetensors")
    assert meta["config"]["classes"] == expected == small_store.top_classes("code", 2)
    assert tensors["objective.head.linear.weight"].shape[0] == 2
    id_result = evaluate_id(result.out, small_store, "code", top_k=2)
    assert id_result.kind == "head" and id_result.loss > 0


def _train_losses(run_dir: str) -> list[float]:
    rows = [json.loads(line) for line in open(f"{run_dir}/metrics.jsonl")]
    return [r["loss"] for r in rows if r["kind"] == "train"]


def test_sgd_optimizers_train_and_differ(config) -> None:
    """Plain SGD and SGD with momentum both lower the training loss; momentum changes the path."""
    losses = {}
    for name in ("sgd", "sgdm"):
        run = config(optimizer=name, lr=0.05, epochs=4, out=config().out.parent / name)
        losses[name] = _train_losses(pretrain(run, progress=False).out)
        assert np.mean(losses[name][-4:]) < np.mean(losses[name][:4]), name
    assert losses["sgd"][-1] != losses["sgdm"][-1]
