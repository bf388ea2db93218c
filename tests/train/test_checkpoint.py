"""Checkpoints: optimizer state round-trips through safetensors, writes are atomic, nothing is
unpickled, and a run killed with SIGKILL after a checkpoint resumes to the same final weights as an
uninterrupted run."""

from __future__ import annotations

import json
import os
import pickle
import signal
import subprocess
import sys
import textwrap

import pytest
import torch

from ecgscale.errors import DataError
from ecgscale.train import checkpoint as ckpt
from ecgscale.train import load_encoder, pretrain


def test_optimizer_state_round_trips_through_safetensors(tmp_path) -> None:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.LayerNorm(3))
    groups = [
        {"params": [model[0].weight], "weight_decay": 0.1},
        {"params": [model[0].bias, *model[1].parameters()], "weight_decay": 0.0},
    ]
    opt = torch.optim.AdamW(groups, lr=0.01, betas=(0.8, 0.95))
    x = torch.randn(8, 4)
    for _ in range(3):
        opt.zero_grad()
        model(x).pow(2).sum().backward()
        opt.step()
    tensors, meta = ckpt.optimizer_tensors(opt)
    weights = {k: v.clone() for k, v in model.state_dict().items()}
    ckpt.save_tensors(
        tmp_path / "o.safetensors", {**tensors, **ckpt.with_prefix("w", weights)}, meta
    )
    loaded, meta2 = ckpt.load_tensors(tmp_path / "o.safetensors")

    twin = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.LayerNorm(3))
    twin.load_state_dict(ckpt.strip_prefix("w", loaded))
    twin_groups = [
        {"params": [twin[0].weight], "weight_decay": 0.5},
        {"params": [twin[0].bias, *twin[1].parameters()], "weight_decay": 0.5},
    ]
    twin_opt = torch.optim.AdamW(twin_groups, lr=1.0)
    ckpt.load_optimizer(
        twin_opt, {k: v for k, v in loaded.items() if not k.startswith("w.")}, meta2
    )
    assert (
        twin_opt.param_groups[0]["weight_decay"] == 0.1 and twin_opt.param_groups[0]["lr"] == 0.01
    )
    for m, o in ((model, opt), (twin, twin_opt)):
        for _ in range(2):
            o.zero_grad()
            m(x).pow(2).sum().backward()
            o.step()
    for a, b in zip(model.parameters(), twin.parameters(), strict=True):
        assert torch.equal(a, b)


def test_writes_are_atomic_and_damaged_files_are_reported(tmp_path, monkeypatch) -> None:
    path = tmp_path / "w.safetensors"
    ckpt.save_tensors(path, {"a": torch.ones(3)}, {"step": 1})

    def crash(tensors, filename, metadata=None):
        with open(filename, "wb") as fh:
            fh.write(b"half a file")
        raise OSError("disk full")

    monkeypatch.setattr(ckpt, "save_file", crash)
    with pytest.raises(OSError, match="disk full"):
        ckpt.save_tensors(path, {"a": torch.zeros(3)}, {"step": 2})
    tensors, meta = ckpt.load_tensors(path)
    assert torch.equal(tensors["a"], torch.ones(3)) and meta == {"step": 1}
    (tmp_path / "bad.safetensors").write_bytes(b"\x00" * 40)
    with pytest.raises(DataError, match="not a readable safetensors checkpoint"):
        ckpt.load_tensors(tmp_path / "bad.safetensors")
    with pytest.raises(DataError, match="no such checkpoint"):
        ckpt.load_tensors(tmp_path / "missing.safetensors")


KILLER = textwrap.dedent(
    """
    import os, signal, sys
    from ecgscale.train import TrainConfig, pretrain, trainer

    config = TrainConfig.model_validate_json(sys.argv[1])
    kill_after = int(sys.argv[2])
    original = trainer._Run.save_checkpoint
    saved = []

    def save_then_die(self):
        original(self)
        saved.append(self.state.step)
        if len(saved) == kill_after:
            os.kill(os.getpid(), signal.SIGKILL)

    trainer._Run.save_checkpoint = save_then_die
    pretrain(config, progress=False)
    """
)


def _train_lines(out) -> list[dict]:
    lines = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if k != "samples_per_s"} for r in lines]


def test_killed_run_resumes_to_the_same_final_weights(config, tmp_path, monkeypatch) -> None:
    # 2 epochs of 8 steps; checkpoints at steps 3, 6, 8 (epoch end), 9, ...: killed after step 9,
    # in the middle of the second epoch. The ResNet's dropout makes the generator state matter.
    reference = pretrain(config(out=tmp_path / "ref", checkpoint_every=3), progress=False)
    cfg = config(out=tmp_path / "killed", checkpoint_every=3)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    args = [sys.executable, "-c", KILLER, cfg.model_dump_json(by_alias=True), "4"]
    proc = subprocess.run(args, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    _, meta = ckpt.load_tensors(cfg.out / "last.safetensors")
    assert meta["state"]["step"] == 9 and not (cfg.out / "result.json").exists()

    def no_unpickling(*args, **kwargs):
        raise AssertionError("a checkpoint was unpickled")

    monkeypatch.setattr(torch, "load", no_unpickling)
    monkeypatch.setattr(pickle, "load", no_unpickling)
    monkeypatch.setattr(pickle, "loads", no_unpickling)
    resumed = pretrain(cfg, resume=True, progress=False)
    assert resumed.steps == reference.steps == 16
    want, _ = ckpt.load_tensors(tmp_path / "ref" / "last.safetensors")
    got, _ = ckpt.load_tensors(cfg.out / "last.safetensors")
    assert want.keys() == got.keys()
    assert all(torch.equal(want[k], got[k]) for k in want)  # weights, moments and generators
    assert _train_lines(cfg.out) == _train_lines(tmp_path / "ref")  # one line per step, same values
    assert resumed.best_metrics == reference.best_metrics
    assert resumed.best_step == reference.best_step
    best = load_encoder(cfg.out)
    for key, value in best.state_dict().items():
        assert torch.equal(value, load_encoder(tmp_path / "ref").state_dict()[key])
    # Resuming a finished run trains no further.
    again = pretrain(cfg, resume=True, progress=False)
    assert again.steps == 16 and again.samples_seen == resumed.samples_seen
