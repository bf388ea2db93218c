"""ECG-FM adapter: fairseq-signals' wav2vec 2.0 key layout and the README's parameter count at
the released configuration, checkpoints as fairseq writes them (cfg as a plain dict, optimizer
state, both positional-conv layouts and weight-norm spellings), round trips, embeddings of store
batches, and one-line bad-file errors (a pickled config object names the conversion)."""

from __future__ import annotations

from argparse import Namespace
from collections import defaultdict
from pathlib import Path

import pytest
import torch

from ecgscale.errors import DataError
from ecgscale.models.external import get_adapter, load_external
from ecgscale.models.external.ecg_fm import CONVERT, conv_layers
from fixtures.external_checkpoints import (
    assert_round_trip,
    perturbed,
    raises_one_line,
)

# Two layers of width 32, four 16-channel convs (16x), a 16-wide positional conv: every module.
SMALL = dict(
    encoder_layers=2, encoder_embed_dim=32, encoder_ffn_embed_dim=64, encoder_attention_heads=2,
    conv_feature_layers="[(16, 2, 2)] * 4", conv_pos=16, conv_pos_groups=4, final_dim=8,
    latent_vars=5,
)  # fmt: skip
ADAPTER = get_adapter("ecg-fm")


def small(seed: int = 0, **config) -> torch.nn.Module:
    return perturbed(ADAPTER.random(seed, **{**SMALL, **config}), seed)


def test_released_configuration_has_the_readme_parameter_count_and_fairseq_keys() -> None:
    with torch.device("meta"):
        net = ADAPTER.random()
    state = net.state_dict()
    # bowang-lab/ECG-FM README: "the base model has 90,883,072 parameters" (with the
    # pre-training quantizer and projections).
    assert sum(p.numel() for p in net.parameters()) == 90_883_072
    assert len(state) == 12 * 16 + 23
    assert state["feature_extractor.conv_layers.0.0.weight"].shape == (256, 12, 2)
    assert state["feature_extractor.conv_layers.0.2.weight"].shape == (256,)
    assert "feature_extractor.conv_layers.1.2.weight" not in state
    assert state["post_extract_proj.weight"].shape == (768, 256)
    assert state["encoder.pos_conv.0.weight_v"].shape == (768, 48, 128)
    assert state["encoder.pos_conv.0.weight_g"].shape == (1, 1, 128)
    assert state["encoder.layers.11.self_attn.out_proj.weight"].shape == (768, 768)
    assert state["encoder.layers.0.fc1.weight"].shape == (3072, 768)
    assert state["quantizer.vars"].shape == (1, 640, 128)
    assert state["quantizer.weight_proj.weight"].shape == (640, 256)
    assert state["project_q.weight"].shape == (256, 256) and state["mask_emb"].shape == (768,)
    assert net.embed_dim == 768


def test_conv_feature_layers_are_read_without_eval() -> None:
    assert conv_layers("[(256, 2, 2)] * 4") == [(256, 2, 2)] * 4
    assert conv_layers("[(512, 10, 5)] + [(512, 3, 2)] * 2") == [(512, 10, 5)] + [(512, 3, 2)] * 2
    for bad in ("__import__('os')", "[(256, 2)]", "[]", "[(0, 2, 2)]"):
        raises_one_line("conv_feature_layers", conv_layers, bad)


def test_round_trip_keeps_every_tensor(tmp_path: Path) -> None:
    net = small()
    ADAPTER.save(net, tmp_path / "a.pt")
    raw = torch.load(tmp_path / "a.pt", weights_only=True)
    assert sorted(raw) == ["cfg", "model"] and raw["model"].keys() == net.state_dict().keys()
    x = torch.randn(2, 12, 800)
    assert_round_trip(ADAPTER, net, tmp_path / "a.pt", tmp_path / "b.pt", x)


def test_loads_fairseq_training_checkpoints_of_either_layout(tmp_path: Path) -> None:
    """The trainer's dict (plain cfg with task/criterion sections, optimizer history, extra
    state, a pre-hydra Namespace); the newer fairseq-signals layout keeps
    the positional conv at conv_pos.pos_conv and spells weight norm the parametrized way.
    `save` writes the layout it read."""
    net = small()
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-3)
    net(torch.randn(2, 12, 400)).sum().backward()
    optimizer.step()
    newer = {
        k.replace("encoder.pos_conv.", "conv_pos.pos_conv.")
        .replace("weight_g", "parametrizations.weight.original0")
        .replace("weight_v", "parametrizations.weight.original1"): v
        for k, v in net.state_dict().items()
    }
    cfg = {"model": {"_name": "wav2vec2_cmsc", **SMALL}, "task": {"_name": "ecg_pretraining"}}
    for name, state in (("old.pt", net.state_dict()), ("new.pt", newer)):
        torch.save(
            {
                "cfg": cfg, "model": state, "args": None,
                "optimizer_history": [{"criterion_name": "Wav2Vec2WithCMSCCriterion",
                                       "num_updates": 10}],
                "last_optimizer_state": optimizer.state_dict(),
                "extra_state": {"train_iterator": {"epoch": 3}, "val_loss": 0.5},
                "legacy_args": Namespace(arch="wav2vec2", lr=[5e-5]),
            },
            tmp_path / name,
        )  # fmt: skip
        loaded = ADAPTER.load(tmp_path / name)
        x = torch.randn(2, 12, 2500)
        torch.testing.assert_close(loaded(x), net(x), rtol=0, atol=0)
        ADAPTER.save(loaded, tmp_path / f"re-{name}")
        keys = set(torch.load(tmp_path / f"re-{name}", weights_only=True)["model"])
        assert ("conv_pos.pos_conv.0.weight_g" in keys) == (name == "new.pt")
        assert torch.load(tmp_path / f"re-{name}", weights_only=True)["cfg"] == cfg


def test_network_standardises_each_lead() -> None:
    """ECG-FM's Standardize: a per-lead offset and scale do not change the embedding."""
    net = small()
    x = torch.randn(2, 12, 2500)
    scaled = x * torch.linspace(0.1, 3.0, 12).view(1, 12, 1) + torch.randn(1, 12, 1)
    with torch.no_grad():
        torch.testing.assert_close(net(scaled), net(x), atol=1e-4, rtol=1e-4)


def test_blocks_equal_torch_references() -> None:
    """The positional conv is torch's weight_norm(dim=2) conv + SamePad + GELU, and a post-LN
    encoder layer is torch's TransformerEncoderLayer (GELU, no dropout) with q/k/v stacked."""
    net = small()
    mine = net.encoder.pos_conv[0]
    conv = torch.nn.Conv1d(32, 32, 16, padding=8, groups=4)
    conv = torch.nn.utils.parametrizations.weight_norm(conv, dim=2)
    with torch.no_grad():
        conv.parametrizations.weight.original0.copy_(mine.weight_g)
        conv.parametrizations.weight.original1.copy_(mine.weight_v)
        conv.bias.copy_(mine.bias)
        h = torch.randn(2, 32, 40)
        torch.testing.assert_close(mine(h), torch.nn.functional.gelu(conv(h)[..., :-1]))

    layer = net.encoder.layers[0]
    ref = torch.nn.TransformerEncoderLayer(32, 2, 64, dropout=0.0, activation="gelu",
                                           batch_first=True)  # fmt: skip
    attn = layer.self_attn
    with torch.no_grad():
        ref.self_attn.in_proj_weight.copy_(torch.cat([attn.q_proj.weight, attn.k_proj.weight,
                                                      attn.v_proj.weight]))  # fmt: skip
        ref.self_attn.in_proj_bias.copy_(torch.cat([attn.q_proj.bias, attn.k_proj.bias,
                                                    attn.v_proj.bias]))  # fmt: skip
        ref.self_attn.out_proj.load_state_dict(attn.out_proj.state_dict())
        ref.linear1.load_state_dict(layer.fc1.state_dict())
        ref.linear2.load_state_dict(layer.fc2.state_dict())
        ref.norm1.load_state_dict(layer.self_attn_layer_norm.state_dict())
        ref.norm2.load_state_dict(layer.final_layer_norm.state_dict())
        x = torch.randn(2, 40, 32)
        torch.testing.assert_close(layer(x), ref.eval()(x), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize(("fs", "samples"), [(500, 5000), (100, 1000)])
def test_embeds_store_batches(tmp_path: Path, fs: int, samples: int) -> None:
    ADAPTER.save(small(), tmp_path / "w.pt")
    encoder = load_external(f"ecg-fm:{tmp_path / 'w.pt'}", store_fs=fs)
    seen = []
    encoder.network.register_forward_pre_hook(lambda _, args: seen.append(args[0].shape))
    with torch.no_grad():
        z = encoder.forward_features(torch.randn(3, 12, samples))
    assert z.shape == (3, 32) and encoder.embed_dim == 32
    assert seen == [(3, 12, 2500)]


class Opaque:
    """Stands for an omegaconf DictConfig: weights_only loading must refuse to build it."""


def test_bad_files_are_one_line(tmp_path: Path) -> None:
    (tmp_path / "notes.pt").write_text("not a checkpoint")
    raises_one_line(r"notes\.pt: not a PyTorch checkpoint", ADAPTER.load, tmp_path / "notes.pt")

    state = small().state_dict()
    torch.save({"model": state, "cfg": Opaque()}, tmp_path / "omegaconf.pt")
    message = raises_one_line(r"pickles .*Opaque", ADAPTER.load, tmp_path / "omegaconf.pt")
    assert CONVERT in message
    torch.save({"model": state, "extra_state": defaultdict(list)}, tmp_path / "meters.pt")
    raises_one_line(
        r"pickles builtins\.list, collections\.defaultdict, which",
        ADAPTER.load,
        tmp_path / "meters.pt",
    )

    torch.save({"model": state}, tmp_path / "nocfg.pt")
    raises_one_line(r"no cfg\['model'\]", ADAPTER.load, tmp_path / "nocfg.pt")

    torch.save(state, tmp_path / "bare.pt")
    raises_one_line(r"expected a fairseq-signals checkpoint", ADAPTER.load, tmp_path / "bare.pt")

    cfg = {"model": {"_name": "ecg_transformer_classifier"}}
    torch.save({"model": state, "cfg": cfg}, tmp_path / "finetuned.pt")
    raises_one_line(r"pre-trained wav2vec2 checkpoint", ADAPTER.load, tmp_path / "finetuned.pt")

    cfg = {"model": {"_name": "wav2vec2_cmsc", **SMALL}}
    torch.save({"model": {"encoder.weight": torch.zeros(3)}, "cfg": cfg}, tmp_path / "other.pt")
    raises_one_line(r"do not match the architecture: .* missing", ADAPTER.load,
                    tmp_path / "other.pt")  # fmt: skip

    wide = {"model": {**cfg["model"], "encoder_ffn_embed_dim": 48}}
    torch.save({"model": state, "cfg": wide}, tmp_path / "shapes.pt")
    raises_one_line(r"6 shape \(e\.g\. encoder\.layers\.0\.fc1\.weight\)", ADAPTER.load,
                    tmp_path / "shapes.pt")  # fmt: skip
    with pytest.raises(DataError):
        ADAPTER.load(tmp_path / "missing.pt")
