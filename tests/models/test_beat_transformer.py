"""Beat-token Transformer: shapes at two lengths, gradients, seeds, padding and token masks, the
size ladder and its closed-form parameter count."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from ecgscale.data.synth import SynthConfig, generate
from ecgscale.errors import ConfigError
from ecgscale.models.base import count_parameters
from ecgscale.models.beat_transformer import BeatTransformer, param_count
from ecgscale.models.flops import build_on_meta
from ecgscale.models.registry import create_model, get_spec, ladder

SMALL = {"width": 32, "depth": 2, "heads": 2}


def _model(seed: int = 0, **config) -> BeatTransformer:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return create_model("beat_transformer", **{**SMALL, **config})


@pytest.fixture(scope="module")
def ecg() -> torch.Tensor:
    x, _ = generate(3, SynthConfig(fs=100.0, length=1000, seed=11))
    return torch.from_numpy(x)


def test_registered_with_beat_input() -> None:
    spec = get_spec("beat_transformer")
    assert (spec.default_fs, spec.default_length, spec.input_kind) == (100.0, 1000, "beats")


@pytest.mark.parametrize("length", [1000, 500])
def test_shapes_at_two_lengths(ecg: torch.Tensor, length: int) -> None:
    model = _model().eval()
    x = ecg[:, :, :length]
    tokens = model.tokenize(x)
    batch = tokens.to_torch()
    with torch.no_grad():
        out = model.forward_tokens(batch)
        z = model.forward_features(x)
    t = int(tokens.valid.sum(1).max())
    assert 12 * 2 <= t <= 256 and batch.words.shape == (3, t, 60)
    assert out.tokens.shape == (3, t, 32) and out.cls.shape == (3, 32) and z.shape == (3, 32)
    torch.testing.assert_close(z, out.cls)
    assert torch.isfinite(out.tokens[batch.valid]).all()


def test_gradients_reach_every_parameter_and_the_mask_embedding(ecg: torch.Tensor) -> None:
    model = _model(dropout=0.1).train()
    batch = model.tokenize(ecg).to_torch()
    mask_embedding = torch.nn.Parameter(torch.randn(32))
    token_mask = torch.zeros_like(batch.valid)
    token_mask[:, ::3] = True
    out = model.forward_tokens(batch, token_mask, mask_embedding)
    (out.tokens[batch.valid].sum(0) * torch.linspace(-1, 1, 32)).sum().backward()
    for name, p in [*model.named_parameters(), ("mask_embedding", mask_embedding)]:
        assert p.grad is not None and p.grad.abs().sum() > 0, f"{name} gets no gradient"


def test_same_seed_same_output(ecg: torch.Tensor) -> None:
    with torch.no_grad():
        a, b, c = (_model(seed).eval().forward_features(ecg) for seed in (4, 4, 5))
    assert torch.equal(a, b) and not torch.allclose(a, c)


def test_padding_is_never_attended(ecg: torch.Tensor) -> None:
    model = _model().eval()
    batch = model.tokenize(ecg).to_torch()
    assert (~batch.valid).any(), "the batch needs padding for this test"
    pad = ~batch.valid
    noisy = dataclasses.replace(
        batch,
        words=torch.where(pad[..., None], torch.randn_like(batch.words) * 5, batch.words),
        lead=torch.where(pad, torch.randint_like(batch.lead, 12), batch.lead),
        time=torch.where(pad, torch.randint_like(batch.time, 32), batch.time),
    )
    with torch.no_grad():
        clean, changed = model.forward_tokens(batch), model.forward_tokens(noisy)
    torch.testing.assert_close(clean.cls, changed.cls, rtol=0, atol=1e-5)
    torch.testing.assert_close(
        clean.tokens[batch.valid], changed.tokens[batch.valid], rtol=0, atol=1e-5
    )
    # the same change on one real token does change the output (the test can fail)
    first = dataclasses.replace(batch, words=batch.words.clone())
    first.words[:, 0] += 1.0
    with torch.no_grad():
        assert not torch.allclose(model.forward_tokens(first).cls, clean.cls, atol=1e-3)


def test_length_groups_give_every_record_its_output_alone_and_cls_only_the_same() -> None:
    from ecgscale.models.beat_transformer import GROUP_RECORDS

    x, _ = generate(GROUP_RECORDS + 5, SynthConfig(fs=100.0, length=1000, seed=3))
    model = _model().eval()
    tokens = model.tokenize(x)
    lengths = tokens.valid.sum(1)
    assert len(set(lengths.tolist())) > 3, "the batch needs sentences of several lengths"
    token_mask = torch.from_numpy(np.asarray(tokens.valid) & (np.arange(256) % 3 == 0))
    emb = torch.randn(32)
    with torch.no_grad():
        together = model.forward_tokens(tokens, token_mask[:, : int(lengths.max())], emb)
        for i in range(len(x)):
            n = int(lengths[i])
            alone = model.forward_tokens(tokens[[i]], token_mask[[i], :n], emb)
            torch.testing.assert_close(together.cls[i], alone.cls[0], rtol=0, atol=1e-5)
            torch.testing.assert_close(
                together.tokens[i, :n], alone.tokens[0, :n], rtol=0, atol=1e-5
            )
        full = model.forward_tokens(tokens).cls
    torch.testing.assert_close(model.forward_features(tokens), full, rtol=0, atol=1e-5)


def test_cls_only_last_block_trains_every_parameter(ecg: torch.Tensor) -> None:
    model = _model(dropout=0.1).train()
    (model.forward_features(model.tokenize(ecg)) * torch.linspace(-1, 1, 32)).sum().backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, f"{name} gets no gradient"


@pytest.mark.parametrize("size", [1, 2, 11, 16])
def test_padded_narrow_heads_attend_as_unpadded_ones(size: int) -> None:
    from ecgscale.models.beat_transformer import attention

    gen = torch.Generator().manual_seed(size)
    q, k, v = (torch.randn(3, 2, 40, size, generator=gen, requires_grad=True) for _ in range(3))
    mask = torch.arange(40)[None, None, None, :] < torch.tensor([40, 25, 7])[:, None, None, None]
    out = attention(q, k, v, mask, 0.0)
    plain = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    torch.testing.assert_close(out, plain, rtol=0, atol=1e-6)
    grads = torch.autograd.grad(out.sum(), (q, k, v))
    for grad, expected in zip(grads, torch.autograd.grad(plain.sum(), (q, k, v)), strict=True):
        torch.testing.assert_close(grad, expected, rtol=0, atol=1e-5)


def test_masked_tokens_hide_their_words(ecg: torch.Tensor) -> None:
    model = _model().eval()
    batch = model.tokenize(ecg).to_torch()
    token_mask = torch.zeros_like(batch.valid)
    token_mask[:, 1:6] = True
    other = dataclasses.replace(batch, words=batch.words.clone())
    other.words[:, 1:6] = torch.randn_like(other.words[:, 1:6])
    emb = torch.randn(32)
    with torch.no_grad():
        a = model.forward_tokens(batch, token_mask, emb)
        b = model.forward_tokens(other, token_mask, emb)
        unmasked = model.forward_tokens(other)
    torch.testing.assert_close(a.tokens, b.tokens)
    assert not torch.allclose(a.tokens, unmasked.tokens, atol=1e-3)
    with pytest.raises(ConfigError, match="mask_embedding"):
        model.forward_tokens(batch, token_mask)


def test_bad_configurations_and_inputs_are_config_errors(ecg: torch.Tensor) -> None:
    with pytest.raises(ConfigError, match="divisible"):
        create_model("beat_transformer", width=30, heads=4)
    model = _model()
    with pytest.raises(ConfigError, match=r"\(batch, 12, samples\)"):
        model.forward_features(ecg[:, :6])


def test_example_input_is_a_72_bpm_record_of_144_tokens() -> None:
    model = _model()
    x = model.example_input(12, 1000, "cpu")
    tokens = model.tokenize(x)
    assert tokens.beats.tolist() == [12] and int(tokens.valid.sum()) == 144


def test_ladder_spans_20k_to_200m_within_10_percent() -> None:
    points = ladder("beat_transformer")
    targets = np.array([p.target_params for p in points], dtype=np.float64)
    assert len(points) == 9 and targets[0] == 20_000 and targets[-1] == 200_000_000
    steps = np.diff(np.log(targets))
    assert np.allclose(steps, np.log(10) / 2, rtol=0.02)
    depths = [p.config["depth"] for p in points]
    widths = [p.config["width"] for p in points]
    assert depths == sorted(depths) and widths == sorted(widths) and depths[-1] >= 4 * depths[0]
    factory = get_spec("beat_transformer").factory
    for point in points:
        n = count_parameters(build_on_meta(factory, point.config))
        assert n == param_count(point.config)
        assert abs(n / point.target_params - 1) <= 0.10, (point.name, n)
        assert point.config["width"] % point.config["heads"] == 0


@pytest.mark.parametrize(
    "config",
    [
        {"width": 24, "depth": 1, "heads": 3, "mlp_ratio": 2.5},
        {"width": 64, "depth": 2, "heads": 4, "fs": 250.0, "max_tokens": 128, "n_time_bins": 8},
        {"width": 48, "depth": 3, "heads": 2, "leads": 3, "pre_s": 0.3, "post_s": 0.5},
    ],
)
def test_closed_form_count_matches_the_model(config: dict) -> None:
    model = build_on_meta(get_spec("beat_transformer").factory, config)
    assert count_parameters(model) == param_count(config)
