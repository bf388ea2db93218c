"""Label scaling: `label_top_k` trains on the most frequent classes and records them."""

from __future__ import annotations

from ecgscale.data.store import Store
from ecgscale.evaluate.id_eval import evaluate_id
from ecgscale.train import pretrain
from ecgscale.train.checkpoint import load_tensors


def test_top_k_classes_are_trained_recorded_and_evaluated(config, small_store: Store) -> None:
    result = pretrain(config(label_top_k=2, epochs=1), progress=False)
    counts = small_store.labels("code")[small_store.split_indices("train")].sum(0)
    names = small_store.label_sets["code"]
    expected = sorted(names, key=lambda c: (-counts[names.index(c)], c))[:2]
    tensors, meta = load_tensors(f"{result.out}/best.safetensors")
    assert meta["config"]["classes"] == expected == small_store.top_classes("code", 2)
    assert tensors["objective.head.linear.weight"].shape[0] == 2
    id_result = evaluate_id(result.out, small_store, "code", top_k=2)
    assert id_result.kind == "head" and id_result.loss > 0
