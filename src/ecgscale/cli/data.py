"""`ecgscale data prepare|synth|info`: build and inspect prepared-dataset stores."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from ecgscale.data.preprocess import FAMILY_DEFAULTS, PreprocessConfig
from ecgscale.data.store import Store
from ecgscale.errors import ConfigError

console = Console()
data_app = typer.Typer(help="Prepare datasets into stores and inspect them.", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    app.add_typer(data_app, name="data")


def _progress() -> Progress:
    """A transient bar; off when stdout is no terminal (rich would print an empty line there)."""
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=True,
        disable=not console.is_interactive,
    )


def _report(store: Store) -> None:
    skipped = store.manifest["skipped"]
    console.print(
        f"wrote {len(store)} records to [bold]{store.path}[/bold] "
        f"({store.manifest['fs']:g} Hz x {store.length} samples); "
        f"skipped {len(skipped)}"
    )
    for item in skipped[:20]:
        console.print(f"  skipped {item['record_id']}: {item['reason']}", highlight=False)
    if len(skipped) > 20:
        console.print(f"  ... and {len(skipped) - 20} more (listed in manifest.json)")


@data_app.command("prepare")
def prepare_cmd(
    name: Annotated[str, typer.Argument(help="Dataset reader, e.g. ptbxl.")],
    src: Annotated[Path, typer.Option(help="Dataset folder in its official release layout.")],
    out: Annotated[Path, typer.Option(help="Store directory to create.")],
    family: Annotated[
        str | None,
        typer.Option(help="Use this family's default contract: " + ", ".join(FAMILY_DEFAULTS)),
    ] = None,
    fs: Annotated[
        float | None, typer.Option(help="Sampling rate in Hz (default: the family's).")
    ] = None,
    length: Annotated[
        int | None, typer.Option(help="Samples per record (default: the family's).")
    ] = None,
    highpass: Annotated[float, typer.Option(help="High-pass cut-off in Hz (0: none).")] = 0.5,
    lowpass: Annotated[float, typer.Option(help="Low-pass cut-off in Hz (0: none).")] = 0.0,
    rate: Annotated[
        int | None,
        typer.Option(help="Source rate where a dataset has several (default: the reader's)."),
    ] = None,
    scoring: Annotated[
        Path | None,
        typer.Option(
            help="physionet2021: folder of the official scoring tables (default: the 2021 "
            "tables packaged with ecgscale)."
        ),
    ] = None,
    outcomes: Annotated[
        Path | None,
        typer.Option(help="mimic_iv_ecg: CSV keyed by study_id or subject_id (default: none)."),
    ] = None,
    option: Annotated[
        list[str] | None,
        typer.Option(
            "--option", "-o", help="Reader option KEY=VALUE (repeatable) (default: none)."
        ),
    ] = None,
    seed: Annotated[int, typer.Option(help="Seed of folds when the source has none.")] = 0,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing store.")] = False,
) -> None:
    """Read a dataset and write it, preprocessed, as a store."""
    from ecgscale.data.prepare import prepare

    base = FAMILY_DEFAULTS["ptbxl_benchmark"]
    if family is not None:
        if family not in FAMILY_DEFAULTS:
            raise ConfigError(f"--family {family!r}: expected one of {', '.join(FAMILY_DEFAULTS)}")
        base = FAMILY_DEFAULTS[family]
    config = PreprocessConfig(
        fs=base.fs if fs is None else fs,
        length=base.length if length is None else length,
        highpass_hz=(highpass or None) if family is None else base.highpass_hz,
        lowpass_hz=(lowpass or None) if family is None else base.lowpass_hz,
    )
    given = {"rate": rate, "scoring": scoring, "outcomes": outcomes}
    options = {key: value for key, value in given.items() if value is not None}
    for item in option or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--option {item!r}: expected KEY=VALUE")
        options[key.strip()] = value
    with _progress() as bar:
        task = bar.add_task(f"prepare {name}", total=None)
        store = prepare(
            name,
            src,
            out,
            config,
            overwrite=overwrite,
            seed=seed,
            progress=lambda k: bar.advance(task, k),
            **options,
        )
    _report(store)


@data_app.command("synth")
def synth_cmd(
    records: Annotated[int, typer.Option(help="Number of records.", min=1)],
    out: Annotated[Path, typer.Option(help="Store directory to create.")],
    fs: Annotated[float, typer.Option(help="Sampling rate in Hz.")] = 400.0,
    length: Annotated[int, typer.Option(help="Samples per record.")] = 4096,
    shift: Annotated[float, typer.Option(help="Domain shift (0 = source).", min=0)] = 0.0,
    noise: Annotated[float, typer.Option(help="Noise multiplier.", min=0)] = 1.0,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing store.")] = False,
) -> None:
    """Generate synthetic 12-lead ECGs with CODE labels into a store."""
    from ecgscale.data.prepare import synthesize
    from ecgscale.data.synth import SynthConfig

    cfg = SynthConfig(fs=fs, length=length, shift=shift, noise=noise, seed=seed)
    with _progress() as bar:
        task = bar.add_task("synthesise", total=records)
        store = synthesize(
            records, out, cfg, overwrite=overwrite, progress=lambda k: bar.advance(task, k)
        )
    _report(store)


@data_app.command("info")
def info_cmd(
    path: Annotated[Path, typer.Argument(help="Store directory.")],
    verify: Annotated[bool, typer.Option(help="Recompute the checksums.")] = False,
) -> None:
    """Counts, label sets, splits and size of a store."""
    store = Store(path)
    if verify:
        store.verify()
    m = store.manifest
    size = sum(f.stat().st_size for f in store.path.iterdir()) / 2**20
    console.print(
        f"[bold]{store.path}[/bold]: {m['name']}, {len(store)} records, "
        f"{store.meta['patient_id'].nunique()} patients, {m['fs']:g} Hz x {m['length']} "
        f"samples, {size:.1f} MiB; skipped {len(m['skipped'])}"
        + ("; checksums verified" if verify else "")
    )
    console.print(f"preprocessing: {m['preprocessing']}", highlight=False)
    where = "; ".join(f"{name}: {how}" for name, how in m.get("patient_ids", {}).items())
    console.print(f"patient ids: {where or 'not recorded'}", highlight=False)
    splits = store.meta["split"].value_counts()
    console.print(
        "splits: " + ", ".join(f"{k} {splits.get(k, 0)}" for k in ("train", "val", "test"))
    )
    for set_name, classes in store.label_sets.items():
        counts = store.labels(set_name).sum(axis=0)
        table = Table(title=f"label set {set_name} ({len(classes)} classes)")
        table.add_column("class")
        table.add_column("records", justify="right")
        for cls, count in zip(classes, counts, strict=True):
            if count:
                table.add_row(cls, str(int(count)))
        console.print(table)
