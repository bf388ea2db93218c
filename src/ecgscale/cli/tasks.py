"""`ecgscale tasks list`: the registered evaluation tasks and their sizes on prepared stores."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from ecgscale.errors import UserError

console = Console()
tasks_app = typer.Typer(help="Named evaluation tasks.", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    app.add_typer(tasks_app, name="tasks")


@tasks_app.command("list")
def list_cmd(
    root: Annotated[
        Path | None,
        typer.Option(
            help="Folder of prepared stores, one per dataset (ROOT/<dataset>) (default: none)."
        ),
    ] = None,
    file: Annotated[
        list[Path] | None, typer.Option(help="Extra task YAML file (repeatable) (default: none).")
    ] = None,
) -> None:
    """Show every task; with --root, its records (train/val/test) and classes instead of its
    description."""
    from ecgscale.data.store import Store
    from ecgscale.tasks import get_task, list_tasks

    table = Table(title="tasks" + (f" (stores in {root})" if root else ""), box=None)
    table.add_column("task", no_wrap=True)
    table.add_column("dataset: predicts")
    table.add_column("kind")
    table.add_column("records = train/val/test, classes" if root else "description")
    stores: dict[str, Store | None] = {}
    for name in list_tasks(file):
        task = get_task(name, file)
        predicts = task.target or f"{task.labels}" + (f"[:{task.top_k}]" if task.top_k else "")
        detail = task.description
        if root is not None:
            if task.dataset not in stores:
                path = root / task.dataset
                stores[task.dataset] = Store(path) if (path / "manifest.json").is_file() else None
            store = stores[task.dataset]
            if store is None:
                detail = "not prepared"
            else:
                try:
                    data = task.load(store)
                    dropped = len(data.dropped_classes)
                    detail = (
                        f"{len(data)} = {len(data.train)}/{len(data.val)}/{len(data.test)}, "
                        f"{len(data.classes)}" + (f" ({dropped} dropped)" if dropped else "")
                    )
                except UserError as exc:
                    detail = f"unusable: {exc}"
        kind = task.kind + (" (cv)" if task.split == "cv" else "")
        table.add_row(name, f"{task.dataset}: {predicts}", kind, detail)
    console.print(table)
