"""The shipped evaluation tasks: real labelled text with natural-language label descriptions.

Tasks live in ``adapterhub/data/tasks/`` as ``<task>.jsonl`` (one ``{"id", "text", "label",
"split"}`` per line) plus ``tasks.json`` (descriptions, labels, source, licence). They are derived
from WordNet 3.0 glosses and the chatterbot corpus by ``scripts/build_tasks.py``; reading them
needs neither source installed. This module is plain data (no torch) and sits at the bottom of the
package, beside ``errors``, because both the training loop (``models``) and the evaluation bed
(``eval``) read tasks and neither may import the other.

Example:
    >>> task = load_task("wn_pos")
    >>> task.label_names
    ['noun', 'verb', 'adjective', 'adverb']
    >>> texts, labels = task.texts("test"), task.label_ids("test")
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from adapterhub.errors import AdapterHubError

SPLITS = ("train", "validation", "test")


class TaskNotFoundError(AdapterHubError, LookupError):
    """No shipped task has this name."""

    def __init__(self, name: str, known: list[str]) -> None:
        self.name = name
        super().__init__(f"no task named '{name}'; known tasks: {', '.join(known)}")


@dataclass(frozen=True)
class Label:
    """One class: its name and the short description texts are compared against."""

    name: str
    description: str


@dataclass(frozen=True)
class Example:
    """One labelled text of one split."""

    id: str
    text: str
    label: int  # index into Task.labels
    split: str


@dataclass(frozen=True)
class Task:
    """A text-classification task with fixed train/validation/test splits.

    Attributes:
        name: e.g. ``"wn_noun_supersense"``.
        description: what is being classified.
        labels: classes in a fixed order; ``Example.label`` indexes this tuple.
        source, license: where the text comes from and under which terms (see LICENSES.md).
        examples: every example, train first, then validation, then test.
    """

    name: str
    description: str
    labels: tuple[Label, ...]
    source: str
    license: str
    examples: tuple[Example, ...]

    @property
    def label_names(self) -> list[str]:
        return [label.name for label in self.labels]

    @property
    def label_descriptions(self) -> list[str]:
        return [label.description for label in self.labels]

    @property
    def num_labels(self) -> int:
        return len(self.labels)

    def split(self, split: str) -> list[Example]:
        """The examples of one split, in file order.

        Raises:
            ValueError: unknown split name.
        """
        if split not in SPLITS:
            raise ValueError(f"unknown split '{split}'; choose one of {', '.join(SPLITS)}")
        return [e for e in self.examples if e.split == split]

    def texts(self, split: str) -> list[str]:
        return [e.text for e in self.split(split)]

    def label_ids(self, split: str) -> list[int]:
        return [e.label for e in self.split(split)]

    def counts(self, split: str) -> dict[str, int]:
        """Examples per label in one split."""
        out = dict.fromkeys(self.label_names, 0)
        for e in self.split(split):
            out[self.labels[e.label].name] += 1
        return out


def tasks_dir() -> Path:
    """The folder holding the shipped task files."""
    return Path(str(resources.files("adapterhub") / "data" / "tasks"))


@functools.lru_cache(maxsize=1)
def _metadata() -> dict[str, dict]:
    data = json.loads((tasks_dir() / "tasks.json").read_text(encoding="utf-8"))
    return {t["name"]: t for t in data["tasks"]}


def list_tasks() -> list[str]:
    """Names of the shipped tasks, in catalogue order."""
    return list(_metadata())


@functools.lru_cache(maxsize=None)
def load_task(name: str) -> Task:
    """Read one shipped task (cached: tasks are immutable).

    Raises:
        TaskNotFoundError: no task of that name.
    """
    meta = _metadata().get(name)
    if meta is None:
        raise TaskNotFoundError(name, list_tasks())
    labels = tuple(Label(lab["name"], lab["description"]) for lab in meta["labels"])
    index = {lab.name: i for i, lab in enumerate(labels)}
    examples = []
    with open(tasks_dir() / meta["file"], encoding="utf-8") as f:
        for line in f:
            row = json.loads(line)
            examples.append(Example(row["id"], row["text"], index[row["label"]], row["split"]))
    return Task(
        name=meta["name"],
        description=meta["description"],
        labels=labels,
        source=meta["source"],
        license=meta["license"],
        examples=tuple(examples),
    )


def resolve_task(task: str | Task) -> Task:
    """A ``Task`` from a task or its name."""
    return task if isinstance(task, Task) else load_task(task)
