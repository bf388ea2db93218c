"""Progress display: a rich progress bar on a terminal, one plain line per interval elsewhere
(output redirected to a file or a pipe, where a live bar would print nothing for minutes)."""

from __future__ import annotations

from typing import Any

from rich import get_console
from rich.console import Console
from rich.progress import Progress, ProgressColumn, TaskID


class LineProgress(Progress):
    """A `Progress` without a live display that prints `description: done/total (percent),
    elapsed, fields` for a task every `interval` seconds, when it completes, and at the end."""

    def __init__(self, *columns: str | ProgressColumn, interval: float = 30.0, **kwargs: Any):
        super().__init__(*columns, auto_refresh=False, **kwargs)
        self.interval = interval
        self._printed: dict[TaskID, float] = {}
        self._done: set[TaskID] = set()

    def start(self) -> None:
        """No live display."""

    def stop(self) -> None:
        """The last line of every task that has not printed its final state."""
        for task_id in self.task_ids:
            self._line(task_id, final=True)

    def update(self, task_id: TaskID, **kwargs: Any) -> None:
        super().update(task_id, **kwargs)
        self._line(task_id, final=self._tasks[task_id].finished)

    def _line(self, task_id: TaskID, *, final: bool) -> None:
        task, now = self._tasks[task_id], self.get_time()
        if self.disable or task_id in self._done:
            return
        last = self._printed.get(task_id, task.start_time)
        if final:
            self._done.add(task_id)
        elif last is None or now - last < self.interval:
            return
        self._printed[task_id] = now
        total = f"/{task.total:g} ({task.percentage:.0f} %)" if task.total else ""
        info = " ".join(str(v) for v in task.fields.values() if v != "")
        self.console.print(
            f"{task.description}: {task.completed:g}{total}, {task.elapsed or 0.0:.0f} s"
            + (f", {info}" if info else ""),
            highlight=False,
            markup=False,
        )


def make_progress(
    *columns: str | ProgressColumn,
    console: Console | None = None,
    interval: float = 30.0,
    **kwargs: Any,
) -> Progress:
    """`Progress(*columns, **kwargs)` on a terminal, otherwise a `LineProgress` printing one line
    every `interval` seconds."""
    console = console or get_console()
    if console.is_terminal:
        return Progress(*columns, console=console, **kwargs)
    return LineProgress(*columns, console=console, interval=interval, **kwargs)
