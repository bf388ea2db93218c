"""Named evaluation tasks: dataset, targets, kind, split protocol and metrics (see `registry`)."""

from ecgscale.tasks.registry import Task, TaskData, get_task, list_tasks

__all__ = ["Task", "TaskData", "get_task", "list_tasks"]
