"""DDP under torchrun: two gloo CPU processes train like one process on the same global batches
(supervised BCE; CMSC, whose negatives span both ranks' shards; masked beats, whose loss is a mean
over the masked tokens of the whole global batch); the sharding is exact."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

from ecgscale.train import pretrain
from ecgscale.train.checkpoint import load_tensors
from ecgscale.train.distributed import DistContext, shard_steps

# A transformer without batch statistics and without dropout: its loss does not depend on how
# a global batch is split, so one process and two must agree to float rounding.
PATCHTST = {"d_model": 16, "depth": 1, "heads": 2, "patch_len": 50, "stride": 50, "dropout": 0.0}
BEATS = {"width": 16, "depth": 1, "heads": 2}  # masked modelling: the loss is a token mean

DRIVER = textwrap.dedent(
    """
    import dataclasses, json, sys
    import torch.distributed as dist
    from ecgscale.train import TrainConfig, pretrain

    dist.init_process_group("gloo")
    for text in sys.argv[1:]:
        config = TrainConfig.model_validate_json(text)
        result = dataclasses.asdict(pretrain(config, progress=False))
        result.pop("train_seconds")
        (config.out / f"rank{dist.get_rank()}.json").write_text(json.dumps(result))
    dist.destroy_process_group()
    """
)


def test_shards_are_contiguous_slices_of_each_global_batch() -> None:
    order = np.arange(100, 126)  # 26 rows: three global batches of 8, two rows dropped
    ranks = [shard_steps(order, 8, DistContext(rank=r, world_size=2)) for r in range(2)]
    assert ranks[0].tolist() == [100, 101, 102, 103, 108, 109, 110, 111, 116, 117, 118, 119]
    assert ranks[1].tolist() == [104, 105, 106, 107, 112, 113, 114, 115, 120, 121, 122, 123]
    assert shard_steps(order, 8, DistContext()).tolist() == list(range(100, 124))


def _log(out) -> tuple[list[float], list[float], list[float]]:
    """Training losses, gradient norms (a gradient scaled wrongly shows here: Adam would hide it
    in the weights) and validation losses."""
    lines = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in lines if r["kind"] == "train"]
    val = [r["loss"] for r in lines if r["kind"] == "val"]
    return [r["loss"] for r in train], [r["grad_norm"] for r in train], val


def test_two_gloo_processes_match_one_process(config, tmp_path) -> None:
    common = {"model": "patchtst", "model_config": PATCHTST, "samples": 96, "lr": 1e-3}
    objectives = {
        "sl": {"objective": "sl"},
        "cmsc": {"objective": "cmsc", "objective_options": {"projection_layers": 1}},
        "masked": {"objective": "masked", "model": "beat_transformer", "model_config": BEATS},
    }
    ddp = {k: config(**{**common, **v}, out=tmp_path / f"ddp_{k}") for k, v in objectives.items()}
    driver = tmp_path / "driver.py"
    driver.write_text(DRIVER)
    launch = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc-per-node",
        "2",
    ]
    # A BatchNorm ResNet with early stopping: each rank updates its own BatchNorm statistics, so
    # the ranks must evaluate rank 0's model and share its decisions (or they would part ways).
    bn = config(epochs=4, patience=1, lr=0.5, out=tmp_path / "ddp_bn")
    runs = [*ddp.values(), bn]
    args = [str(driver), *(c.model_dump_json(by_alias=True) for c in runs)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([*launch, *args], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    for run in runs:  # every rank ends with rank 0's results
        ranks = [json.loads((run.out / f"rank{r}.json").read_text()) for r in (0, 1)]
        assert ranks[0] == ranks[1], run.out.name
    for name, spec in objectives.items():
        single = pretrain(
            config(**{**common, **spec}, out=tmp_path / f"one_{name}"), progress=False
        )
        assert single.steps == 6
        result = json.loads((ddp[name].out / "result.json").read_text())
        assert result["samples_seen"] == single.samples_seen == 96
        train_one, norm_one, val_one = _log(tmp_path / f"one_{name}")
        train_two, norm_two, val_two = _log(ddp[name].out)
        assert train_two == pytest.approx(train_one, rel=1e-5), name
        assert norm_two == pytest.approx(norm_one, rel=1e-4), name
        assert val_two == pytest.approx(val_one, rel=1e-5), name
        one, _ = load_tensors(tmp_path / f"one_{name}" / "last.safetensors")
        two, _ = load_tensors(ddp[name].out / "last.safetensors")
        # Adam turns the rounding noise of a gradient near zero into a visible step, so compare
        # each tensor as a whole: ||two - one|| / ||one|| (training moves weights by ~1e-2).
        for key in (k for k in one if k.startswith("module.")):
            a, b = one[key], two[key]
            if key.endswith("qkv.bias"):
                # The key bias has a zero gradient in exact arithmetic (softmax ignores a shift
                # shared by all keys): its steps are pure rounding noise.
                width = a.shape[0] // 3
                a, b = (
                    torch.cat([a[:width], a[2 * width :]]),
                    torch.cat([b[:width], b[2 * width :]]),
                )
            assert float((b - a).norm() / a.norm()) < 1e-4, key
