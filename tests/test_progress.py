"""Progress off a terminal: one line per interval, on completion and at the end."""

from __future__ import annotations

import io

from rich.console import Console
from rich.progress import Progress

from ecgscale.progress import LineProgress, make_progress


def _clock(times: list[float]):
    return lambda: times[0]


def test_a_terminal_gets_a_bar_and_a_file_gets_lines() -> None:
    terminal = Console(file=io.StringIO(), force_terminal=True)
    assert type(make_progress(console=terminal)) is Progress
    assert isinstance(make_progress(console=Console(file=io.StringIO())), LineProgress)


def test_lines_per_interval_on_completion_and_none_when_disabled() -> None:
    out = io.StringIO()
    now = [0.0]
    progress = LineProgress(
        console=Console(file=out, width=200), interval=10.0, get_time=_clock(now)
    )
    with progress:
        task = progress.add_task("sl resnet", total=100, info="")
        for step in range(1, 101):
            now[0] = step * 0.5  # 50 s in all: lines at 10, 20, 30, 40 s and at completion
            progress.update(task, completed=step, info=f"loss {1 / step:.3f}")
    lines = out.getvalue().splitlines()
    assert lines == [
        "sl resnet: 20/100 (20 %), 10 s, loss 0.050",
        "sl resnet: 40/100 (40 %), 20 s, loss 0.025",
        "sl resnet: 60/100 (60 %), 30 s, loss 0.017",
        "sl resnet: 80/100 (80 %), 40 s, loss 0.013",
        "sl resnet: 100/100 (100 %), 50 s, loss 0.010",
    ]
    quiet = io.StringIO()
    with LineProgress(console=Console(file=quiet), disable=True) as progress:
        progress.update(progress.add_task("x", total=2), completed=2)
    assert quiet.getvalue() == ""


def test_an_unfinished_task_prints_its_last_state_at_the_end() -> None:
    out = io.StringIO()
    with LineProgress(console=Console(file=out, width=200), interval=1e9) as progress:
        task = progress.add_task("masked beat_transformer", total=10, info="")
        progress.update(task, completed=3, info="loss 0.5")  # e.g. stopped early
    assert out.getvalue().splitlines() == ["masked beat_transformer: 3/10 (30 %), 0 s, loss 0.5"]
