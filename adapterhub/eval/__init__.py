"""Evaluation bed: real tasks (``tasks``), scoring under the similarity and head protocols."""

from adapterhub.eval.evaluate import (
    EvalResult,
    embed_texts,
    evaluate,
    fit_head,
    head_only,
    relative_scores,
    score,
)
from adapterhub.eval.heads import head_keys
from adapterhub.eval.library import LibraryNotFoundError, load_library
from adapterhub.eval.tasks import Example, Label, Task, TaskNotFoundError, list_tasks, load_task

__all__ = [
    "EvalResult",
    "Example",
    "Label",
    "LibraryNotFoundError",
    "Task",
    "TaskNotFoundError",
    "embed_texts",
    "evaluate",
    "fit_head",
    "head_keys",
    "head_only",
    "list_tasks",
    "load_library",
    "load_task",
    "relative_scores",
    "score",
]
