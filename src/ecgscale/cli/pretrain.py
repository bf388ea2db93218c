"""`ecgscale pretrain`: train an encoder with an objective (the logic is `ecgscale.train.pretrain`).

Options left out keep `TrainConfig`'s defaults; `--config FILE` (YAML or JSON with `TrainConfig`
fields) gives a base that the other options override. Under torchrun:

    torchrun --standalone --nproc-per-node 2 --no-python ecgscale pretrain ...
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated, Any

import typer
import yaml
from rich.console import Console

from ecgscale.errors import ConfigError
from ecgscale.train.config import TrainConfig

console = Console()


def register(app: typer.Typer) -> None:
    app.command("pretrain")(pretrain_cmd)


def _json_value(text: str) -> Any:
    """A JSON value, or the text itself when it is not JSON (so `a=resnet` needs no quotes)."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def _key_values(items: list[str] | None, flag: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"{flag} {item!r}: expected KEY=VALUE")
        out[key.strip()] = _json_value(value)
    return out


def _default(field: str) -> str:
    """`TrainConfig`'s default of `field` for `--help`."""
    return str(TrainConfig.model_fields[field].get_default(call_default_factory=True))


def _base(path: Path | None) -> dict[str, Any]:
    if path is None:
        return {}
    if not path.is_file():
        raise ConfigError(f"--config {path}: no such file")
    data = yaml.safe_load(path.read_text())
    if not isinstance(data, dict):
        raise ConfigError(f"--config {path}: expected a mapping of TrainConfig fields")
    return data


def pretrain_cmd(
    model: Annotated[
        str | None,
        typer.Option(help="Model family or size (resnet-200K). Required (here or in --config)."),
    ] = None,
    objective: Annotated[
        str | None,
        typer.Option(help="Objective: sl, cmsc or masked. Required (here or in --config)."),
    ] = None,
    data: Annotated[
        Path | None,
        typer.Option(help="Store directory to train on. Required (here or in --config)."),
    ] = None,
    out: Annotated[
        Path | None, typer.Option(help="Run directory to write. Required (here or in --config).")
    ] = None,
    label_set: Annotated[
        str | None,
        typer.Option(help="Label set (needed by sl).", show_default=_default("label_set")),
    ] = None,
    epochs: Annotated[
        int | None,
        typer.Option(help="Budget: passes over the data.", show_default=_default("epochs")),
    ] = None,
    samples: Annotated[
        int | None,
        typer.Option(help="Budget: training records seen.", show_default=_default("samples")),
    ] = None,
    patience: Annotated[
        int | None,
        typer.Option(
            help="Early stopping: epochs without a better val loss.",
            show_default=_default("patience"),
        ),
    ] = None,
    batch_size: Annotated[
        int | None, typer.Option(help="Global batch size.", show_default=_default("batch_size"))
    ] = None,
    lr: Annotated[
        float | None, typer.Option(help="Peak learning rate (AdamW).", show_default=_default("lr"))
    ] = None,
    weight_decay: Annotated[
        float | None,
        typer.Option(help="AdamW weight decay.", show_default=_default("weight_decay")),
    ] = None,
    warmup_fraction: Annotated[
        float | None,
        typer.Option(
            help="Fraction of steps of linear warm-up.", show_default=_default("warmup_fraction")
        ),
    ] = None,
    grad_clip: Annotated[
        float | None, typer.Option(help="Gradient norm clip.", show_default=_default("grad_clip"))
    ] = None,
    data_fraction: Annotated[
        float | None,
        typer.Option(
            help="Fraction of training patients (nested subsets).",
            show_default=_default("data_fraction"),
        ),
    ] = None,
    data_seed: Annotated[
        int | None,
        typer.Option(help="Seed of the data subsets.", show_default=_default("data_seed")),
    ] = None,
    seed: Annotated[
        int | None, typer.Option(help="Seed of the run.", show_default=_default("seed"))
    ] = None,
    device: Annotated[
        str | None, typer.Option(help="cpu, cuda or cuda:N.", show_default=_default("device"))
    ] = None,
    bf16: Annotated[
        bool | None,
        typer.Option("--bf16", help="bf16 autocast (CUDA).", show_default=_default("bf16")),
    ] = None,
    compile_: Annotated[
        bool | None,
        typer.Option(
            "--compile", help="torch.compile the encoder (CUDA).", show_default=_default("compile")
        ),
    ] = None,
    checkpoint_every: Annotated[
        int | None,
        typer.Option(
            help="Steps between mid-epoch checkpoints (0: epochs only).",
            show_default=_default("checkpoint_every"),
        ),
    ] = None,
    model_config: Annotated[
        list[str] | None,
        typer.Option(
            "--model-config",
            "-m",
            help="Model option KEY=VALUE (repeatable) (default: the size's).",
        ),
    ] = None,
    objective_option: Annotated[
        list[str] | None,
        typer.Option(
            "--objective-option",
            "-O",
            help="Objective option KEY=VALUE (repeatable) (default: none).",
        ),
    ] = None,
    config: Annotated[
        Path | None,
        typer.Option(help="YAML/JSON file of TrainConfig fields (a base) (default: none)."),
    ] = None,
    tensorboard: Annotated[
        bool | None,
        typer.Option(
            "--tensorboard",
            help="Write TensorBoard event files under --out/tb.",
            show_default=_default("tensorboard"),
        ),
    ] = None,
    mlflow_uri: Annotated[
        str | None,
        typer.Option(
            help="Log the finished run to MLflow at this tracking URI (file:./mlruns, "
            "http://host:5000).",
            show_default="none",
        ),
    ] = None,
    mlflow_experiment: Annotated[
        str | None, typer.Option(help="MLflow experiment.", show_default="ecgscale")
    ] = None,
    resume: Annotated[bool, typer.Option(help="Continue the run in --out.")] = False,
    overwrite: Annotated[bool, typer.Option(help="Replace a run in --out.")] = False,
    progress: Annotated[bool, typer.Option(help="Show a progress bar.")] = True,
) -> None:
    """Pre-train an encoder with an objective on a store; writes checkpoints, a metrics log and
    result.json to --out."""
    from ecgscale.train import pretrain

    fields = _base(config)
    given = {
        "model": model,
        "objective": objective,
        "data": data,
        "out": out,
        "label_set": label_set,
        "epochs": epochs,
        "samples": samples,
        "patience": patience,
        "batch_size": batch_size,
        "lr": lr,
        "weight_decay": weight_decay,
        "warmup_fraction": warmup_fraction,
        "grad_clip": grad_clip,
        "data_fraction": data_fraction,
        "data_seed": data_seed,
        "seed": seed,
        "device": device,
        "bf16": bf16,
        "compile": compile_,
        "checkpoint_every": checkpoint_every,
        "tensorboard": tensorboard,
    }
    fields.update({key: value for key, value in given.items() if value is not None})
    if epochs is not None:
        fields.pop("samples", None)
    if samples is not None:
        fields.pop("epochs", None)
    model_options = {
        **fields.get("model_config", {}),
        **_key_values(model_config, "--model-config"),
    }
    objective_options = {
        **fields.get("objective_options", {}),
        **_key_values(objective_option, "--objective-option"),
    }
    fields.update(model_config=model_options, objective_options=objective_options)
    for required in ("model", "objective", "data", "out"):
        if required not in fields:
            raise ConfigError(f"--{required} is required (or give it in --config)")
    if mlflow_experiment is not None and mlflow_uri is None:
        raise ConfigError("--mlflow-experiment needs --mlflow-uri")
    if mlflow_uri is not None:
        from ecgscale.tracking.mlflow_log import client

        client(mlflow_uri)  # mlflow installed: fail before training, not after
    result = pretrain(
        TrainConfig.model_validate(fields), resume=resume, overwrite=overwrite, progress=progress
    )
    if int(os.environ.get("RANK", "0")) != 0:  # under torchrun, rank 0 reports
        return
    if mlflow_uri is not None:
        from ecgscale.tracking.mlflow_log import log_pretrain

        logged = log_pretrain(result, mlflow_uri, mlflow_experiment, overwrite=overwrite)
        console.print(
            f"MLflow: {'run ' + logged if logged else 'already logged'} at {mlflow_uri}",
            highlight=False,
        )
    metrics = ", ".join(f"{k} {v:.4g}" for k, v in result.best_metrics.items())
    console.print(
        f"{result.model} + {result.objective}: N = {result.params:,} encoder parameters, "
        f"D = {result.records:,} records, {result.samples_seen:,} samples in {result.steps} "
        f"steps ({result.train_flops:.3g} FLOPs); best validation at step {result.best_step}: "
        f"{metrics}" + (" (stopped early)" if result.stopped_early else "")
    )
    console.print(f"wrote [bold]{result.out}[/bold] (result.json, best.safetensors, metrics.jsonl)")
