"""HuBERT-ECG adapter: the HuBERTECG key layout of a transformers HubertModel at the released
sizes, Hugging Face folders as HuBERT-ECG writes them (pre-training heads, fine-tuned
`hubert_ecg.` prefix, either weight-norm spelling, safetensors or pytorch_model.bin), round trips,
agreement with transformers' own forward pass, store batches, and one-line bad-file errors."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from ecgscale.errors import ConfigError
from ecgscale.models.external import get_adapter, load_external
from ecgscale.models.external.weightnorm import weight_norm_names
from fixtures.external_checkpoints import (
    assert_round_trip,
    perturbed,
    raises_one_line,
)

# The optional dependency; its modeling code takes seconds to import, once per session.
pytest.importorskip("transformers.models.hubert.modeling_hubert")

# Two layers of width 32, 16-channel feature encoder, 16-wide positional conv, two codebooks.
SMALL = dict(
    hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
    conv_dim=[16] * 5, num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=4,
    classifier_proj_size=8, ensemble_length=2, vocab_sizes=[10, 7],
)  # fmt: skip
ADAPTER = get_adapter("hubert-ecg")


def small(seed: int = 0) -> torch.nn.Module:
    return perturbed(ADAPTER.random(seed, **SMALL), seed)


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small checkpoint folder in HuBERT-ECG's layout (builds transformers' modules once)."""
    path = tmp_path_factory.mktemp("hubert") / "hubert-ecg-tiny"
    ADAPTER.save(small(), path)
    return path


def test_released_sizes_have_hubert_ecg_keys_and_published_sizes() -> None:
    counts, states = {}, {}
    for size in ("small", "large"):
        with torch.device("meta"):
            net = ADAPTER.random(size=size)
        counts[size] = sum(p.numel() for p in net.parameters())
        states[size] = net.state_dict()
    state = states["small"]
    # Hub: hubert-ecg-small's model.safetensors is 122 MB of float32, hubert-ecg-large shows
    # "189M params" (both rounded; the codebook count of the release is not published).
    assert abs(counts["small"] * 4 / 122e6 - 1) < 0.01
    assert abs(counts["large"] / 189e6 - 1) < 0.01
    assert state["feature_extractor.conv_layers.0.conv.weight"].shape == (512, 1, 10)
    assert state["feature_extractor.conv_layers.0.layer_norm.weight"].shape == (512,)
    assert state["feature_extractor.conv_layers.4.conv.weight"].shape == (512, 512, 2)
    assert "feature_extractor.conv_layers.5.conv.weight" not in state
    assert state["feature_projection.layer_norm.weight"].shape == (512,)
    assert state["masked_spec_embed"].shape == (512,)
    pos = weight_norm_names(state, parametrized=False)
    assert pos["encoder.pos_conv_embed.conv.weight_v"].shape == (512, 32, 128)
    assert pos["encoder.pos_conv_embed.conv.weight_g"].shape == (1, 1, 128)
    assert state["encoder.layers.7.feed_forward.intermediate_dense.weight"].shape == (2048, 512)
    assert "encoder.layers.8.attention.q_proj.weight" not in state
    assert state["final_proj.0.weight"].shape == (256, 512)
    assert state["label_embedding.0.weight"].shape == (100, 256)


def test_round_trip_keeps_every_tensor(folder: Path, tmp_path: Path) -> None:
    config = json.loads((folder / "config.json").read_text())
    assert config["model_type"] == "hubert_ecg" and config["vocab_sizes"] == [10, 7]
    with open(folder / "model.safetensors", "rb") as f:
        header = json.loads(f.read(int.from_bytes(f.read(8), "little")))
    assert "encoder.pos_conv_embed.conv.weight_g" in header  # the spelling every version reads
    assert_round_trip(ADAPTER, small(), folder, tmp_path / "again", torch.randn(2, 12, 500))


def test_embedding_is_transformers_hubert_mean_over_min_max_scaled_leads(folder: Path) -> None:
    """The network equals transformers' HubertModel (pre-training heads dropped) on the leads
    min-max scaled to [-1, 1] and laid end to end, averaged over time."""
    from transformers import HubertConfig, HubertModel

    net = ADAPTER.load(folder)
    fields = json.loads((folder / "config.json").read_text())
    fields = {k: v for k, v in fields.items() if k not in ("model_type", "architectures")}
    reference = HubertModel(HubertConfig(**fields)).eval()
    state = {k: v for k, v in net.state_dict().items() if not k.startswith(("final_", "label_"))}
    reference.load_state_dict(state)
    x = torch.randn(3, 12, 500)
    low, high = x.amin(-1, keepdim=True), x.amax(-1, keepdim=True)
    flat = (2 * (x - low) / (high - low) - 1).flatten(1)
    with torch.no_grad():
        expected = reference(flat).last_hidden_state.mean(1)
        torch.testing.assert_close(net(x), expected, atol=1e-5, rtol=1e-5)
        # Per-lead min-max: a positive per-lead scale and offset do not matter.
        shifted = x * torch.linspace(0.5, 2.0, 12).view(1, 12, 1) + 3.0
        torch.testing.assert_close(net(shifted), expected, atol=1e-4, rtol=1e-4)


def test_fine_tuned_classification_folder_loads_its_backbone(tmp_path: Path) -> None:
    """HuBERTECGForClassification: backbone under `hubert_ecg.` (pre-training heads deleted),
    a classifier head; saved as pytorch_model.bin with the parametrized weight-norm names."""
    net = small()
    backbone = {
        f"hubert_ecg.{k}": v
        for k, v in net.state_dict().items()
        if not k.startswith(("final_proj", "label_embedding"))
    }
    head = {"classifier.weight": torch.zeros(5, 32), "classifier.bias": torch.zeros(5)}
    (tmp_path / "ft").mkdir()
    torch.save(weight_norm_names({**backbone, **head}, True), tmp_path / "ft/pytorch_model.bin")
    ADAPTER.save(net, tmp_path / "pre")
    config = json.loads((tmp_path / "pre/config.json").read_text())
    (tmp_path / "ft/config.json").write_text(json.dumps({**config, "num_labels": 5}))
    loaded = ADAPTER.load(tmp_path / "ft")
    assert not hasattr(loaded, "final_proj") and loaded.vocab_sizes == ()
    x = torch.randn(2, 12, 500)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), net(x), rtol=0, atol=0)


@pytest.mark.parametrize(("fs", "samples"), [(500, 5000), (100, 1000)])
def test_embeds_store_batches(folder: Path, fs: int, samples: int) -> None:
    encoder = load_external(f"hubert-ecg:{folder}", store_fs=fs)
    seen = []
    encoder.network.register_forward_pre_hook(lambda _, args: seen.append(args[0].shape))
    with torch.no_grad():
        z = encoder.forward_features(torch.randn(3, 12, samples))
    assert z.shape == (3, 32) and encoder.embed_dim == 32
    assert seen == [(3, 12, 500)]


def test_bad_folders_are_one_line(folder: Path, tmp_path: Path) -> None:
    raises_one_line(r"no config\.json", ADAPTER.load, tmp_path)
    (tmp_path / "legacy.pt").write_bytes(b"\x80\x02}q\x00.")
    raises_one_line(
        r"no config\.json; expected a Hugging Face", ADAPTER.load, tmp_path / "legacy.pt"
    )

    config = json.loads((folder / "config.json").read_text())
    (tmp_path / "config.json").write_text("{not json")
    raises_one_line(r"config\.json: not a readable JSON config", ADAPTER.load, tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({**config, "model_type": "bert"}))
    raises_one_line(r"model_type 'bert'; expected 'hubert_ecg'", ADAPTER.load, tmp_path)
    (tmp_path / "config.json").write_text(json.dumps(config))
    raises_one_line(r"no model\.safetensors or pytorch_model\.bin", ADAPTER.load, tmp_path)

    save_file({"encoder.weight": torch.zeros(3)}, str(tmp_path / "model.safetensors"))
    raises_one_line(r"do not match the architecture: .* missing", ADAPTER.load, tmp_path)
    (tmp_path / "model.safetensors").write_bytes(b"garbage")
    raises_one_line(r"not a readable safetensors file", ADAPTER.load, tmp_path)

    (tmp_path / "model.safetensors").write_bytes((folder / "model.safetensors").read_bytes())
    (tmp_path / "config.json").write_text(json.dumps({**config, "intermediate_size": 48}))
    raises_one_line(r"6 shape \(e\.g\. encoder\.layers\.0\.feed_forward", ADAPTER.load, tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({**config, "conv_kernel": [10, 3]}))
    raises_one_line(r"config\.json: not a HubertConfig", ADAPTER.load, tmp_path)


def test_missing_transformers_is_a_config_error(
    folder: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "transformers", None)
    raises_one_line(r"pip install ecgscale\[external\]", ADAPTER.load, folder, error=ConfigError)
