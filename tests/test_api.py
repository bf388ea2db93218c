"""The top-level API: every public name resolves; ladder names, embeddings, the estimator, Study."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import ecgscale
from ecgscale.errors import ConfigError, UserError
from ecgscale.models.base import count_parameters
from ecgscale.models.registry import ladder_point, resolve_model

DEMO = Path(__file__).resolve().parents[1] / "examples" / "demo.yaml"


@pytest.mark.parametrize("name", ecgscale.__all__)
def test_every_public_name_resolves(name: str) -> None:
    assert getattr(ecgscale, name) is not None
    assert name in dir(ecgscale)


def test_unknown_attribute_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        ecgscale.nope  # noqa: B018


def test_ladder_names_build_their_size() -> None:
    assert resolve_model("resnet") == ("resnet", {})
    assert resolve_model("resnet-200K")[1] == ladder_point("resnet", "resnet-200K").config
    small = ecgscale.create_model("resnet-2K")
    assert 1_000 < count_parameters(small) < 4_000
    wider = ecgscale.create_model("resnet-2K", kernel_size=9)
    assert count_parameters(wider) != count_parameters(small)
    with pytest.raises(ConfigError, match="unknown model 'resnot-2K'"):
        ecgscale.create_model("resnot-2K")
    with pytest.raises(ConfigError, match="unknown size"):
        ecgscale.create_model("resnet-big")


def test_list_models_filters_and_lists_sizes() -> None:
    assert ecgscale.list_models("res*") == ["resnet"]
    sized = ecgscale.list_models("resnet*", sizes=True)
    assert sized[:3] == ["resnet", "resnet-20K", "resnet-63K"]
    assert "anynet" not in sized
    assert ecgscale.list_models("resnet-2*", sizes=True) == [
        "resnet-20K", "resnet-200K", "resnet-2M", "resnet-20M", "resnet-200M"
    ]  # fmt: skip


def test_train_config_takes_a_ladder_name() -> None:
    config = ecgscale.TrainConfig(
        model="resnet-2K", model_config={"kernel_size": 9}, objective="sl", data="s", out="o",
        epochs=1,
    )  # fmt: skip
    assert config.model == "resnet"
    assert config.model_options == {**resolve_model("resnet-2K")[1], "kernel_size": 9}


def test_embed_an_array_in_batches() -> None:
    encoder = ecgscale.create_model("resnet-2K")
    x = np.random.default_rng(0).normal(size=(5, 12, 512)).astype(np.float32)
    features = encoder.embed(x, batch_size=2)
    assert features.shape == (5, encoder.embed_dim) and features.dtype == np.float32
    np.testing.assert_allclose(encoder.embed(x[:1]), features[:1], rtol=1e-5, atol=1e-6)
    with pytest.raises(UserError, match="expected \\(records, leads, samples\\)"):
        encoder.embed(x[0])


def _separable(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    x = rng.normal(size=(n, 4))
    return x, np.stack([x[:, 0] > 0, x[:, 1] + 0.3 * x[:, 2] > 0], axis=1).astype(float)


def test_linear_probe_estimator_multilabel() -> None:
    rng = np.random.default_rng(1)
    x, y = _separable(300, rng)
    x_new, y_new = _separable(100, rng)
    probe = ecgscale.LinearProbe("multilabel").fit(x, y)
    proba = probe.predict_proba(x_new)
    assert proba.shape == (100, 2) and ((proba >= 0) & (proba <= 1)).all()
    assert probe.predict(x_new).shape == (100, 2)
    assert probe.score(x_new, y_new) > 0.95
    assert probe.result_.n_train == 240 and probe.result_.n_val == 60


def test_linear_probe_estimator_multiclass_regression_and_validation_split() -> None:
    rng = np.random.default_rng(2)
    x, _ = _separable(200, rng)
    classes = np.digitize(x[:, 0], [-0.5, 0.5])
    probe = ecgscale.LinearProbe("multiclass").fit(x[:150], classes[:150], x[150:], classes[150:])
    assert probe.result_.n_val == 50
    assert probe.predict_proba(x).sum(axis=1) == pytest.approx(1.0)
    assert (probe.predict(x) == classes).mean() > 0.9
    target = 2.0 * x[:, 0] - x[:, 3] + 5.0
    ridge = ecgscale.LinearProbe("regression").fit(x, target)
    assert ridge.score(x, target) > 0.99
    assert ridge.predict(x[:3]) == pytest.approx(target[:3], abs=0.05)
    with pytest.raises(UserError, match="call fit"):
        ecgscale.LinearProbe("binary").predict(x)


def test_study_from_yaml_plans_the_demo() -> None:
    study = ecgscale.Study.from_yaml(DEMO)
    runs = study.plan()
    assert runs and {r.family for r in runs} == {f.name for f in study.spec.families}
    assert len({r.run_id for r in runs}) == len(runs)


def test_short_probe_name_is_the_estimator() -> None:
    rng = np.random.default_rng(1)
    x = rng.standard_normal((200, 4))
    y = (x[:, 0] > 0).astype(int)
    fitted = ecgscale.probe("binary").fit(x, y)
    assert isinstance(fitted, ecgscale.LinearProbe) and fitted.score(x, y) > 0.9
