"""TensorBoard event files of a training run: the trainer's log records as scalars.

Every record the trainer writes to `metrics.jsonl` becomes scalars `KIND/FIELD` at the record's
step (`train/loss`, `train/lr`, `train/grad_norm`, ... per step; `val/loss` and the objective's
held-out metrics per validation), and `finish` adds `test/*` (the best weights on the test split).
A resumed run purges the events past its restored step, as it truncates its log, so the scalars
stay equal to the log. Only rank 0 writes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ecgscale.tracking import record_scalars, require

EVENTS_DIR = "tb"  # under the run folder, for `TrainConfig.tensorboard: true`
EVENT_PREFIX = "events.out.tfevents."


def events_dir(setting: bool | Path, out: Path) -> Path | None:
    """The event folder of a `TrainConfig.tensorboard` setting (None: off)."""
    if setting is False:
        return None
    return out / EVENTS_DIR if setting is True else Path(setting)


def check_installed() -> None:
    """ConfigError (one line) when TensorBoard's writer cannot be imported."""
    _writer_module()


def _writer_module() -> Any:
    return require("torch.utils.tensorboard", "tensorboard logging", "tensorboard")


class TensorBoardLog:
    """A `SummaryWriter` on `path` that takes the trainer's log records.

    Args:
        path: event folder.
        step: the step the run continues from (0: a fresh run; events of an earlier run in the
            folder are purged, and in the default `OUT/tb` folder their files removed).
        owned: `path` is the run's own folder (`OUT/tb`), whose old event files may be removed.
    """

    def __init__(self, path: Path, step: int, owned: bool) -> None:
        module = _writer_module()
        path.mkdir(parents=True, exist_ok=True)
        if step == 0 and owned:
            for old in path.glob(f"{EVENT_PREFIX}*"):
                old.unlink()
        # purge_step: readers drop the events at and after it that earlier files hold
        purge = step + 1 if step else 0
        self.writer = module.SummaryWriter(str(path), purge_step=purge, flush_secs=30)
        self.path = path

    def log(self, record: dict[str, Any]) -> None:
        step = int(record["step"])
        for tag, value in record_scalars(record).items():
            self.writer.add_scalar(tag, value, step)
        if record.get("kind") == "val":
            self.writer.flush()

    def finish(self, step: int, test_metrics: dict[str, float]) -> None:
        """`test/*` scalars at the last step, then close the files."""
        for tag, value in record_scalars({"kind": "test", **test_metrics}).items():
            self.writer.add_scalar(tag, value, step)
        self.close()

    def close(self) -> None:
        self.writer.close()


def open_log(setting: bool | Path, out: Path, step: int) -> TensorBoardLog | None:
    """The run's `TensorBoardLog` for a `TrainConfig.tensorboard` setting (None: off)."""
    path = events_dir(setting, out)
    if path is None:
        return None
    return TensorBoardLog(path, step, owned=path == out / EVENTS_DIR)
