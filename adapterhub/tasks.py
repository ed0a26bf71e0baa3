"""The shipped evaluation tasks: real labelled text with natural-language label descriptions.

Tasks live in ``adapterhub/data/tasks/`` as ``<task>.jsonl`` (one ``{"id", "text", "label",
"split"}`` per line) plus ``tasks.json`` (descriptions, labels, source, licence). Two kinds exist:
*classification* tasks (a label per text; an encoder compares texts with label descriptions, an
LLM is asked the task's ``instruction`` and should say the label's ``answer``) and *generation*
tasks (rows carry ``"answers"`` instead of a label; an LLM generates greedily and is scored by
exact match with ``answer_matches``). An encoder cannot do generation, so ``list_tasks()`` lists
classification tasks unless asked otherwise. They are derived
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
KINDS = ("classification", "generation")


class TaskNotFoundError(AdapterHubError, LookupError):
    """No shipped task has this name."""

    def __init__(self, name: str, known: list[str]) -> None:
        self.name = name
        super().__init__(f"no task named '{name}'; known tasks: {', '.join(known)}")


@dataclass(frozen=True)
class Label:
    """One class: its name, the short description texts are compared against, and the word an LLM
    should answer for it (distinct and prefix-free within a task; defaults to the name)."""

    name: str
    description: str
    answer: str = ""

    def __post_init__(self) -> None:
        if not self.answer:
            object.__setattr__(self, "answer", self.name)


@dataclass(frozen=True)
class Example:
    """One text of one split: labelled (classification) or with accepted answers (generation)."""

    id: str
    text: str
    label: int  # index into Task.labels; -1 for generation examples, which have no label
    split: str
    answers: tuple[str, ...] = ()  # generation only: any one of these is a correct output


@dataclass(frozen=True)
class Task:
    """A classification or generation task with fixed train/validation/test splits.

    Attributes:
        name: e.g. ``"wn_noun_supersense"``.
        description: what is being classified or generated.
        labels: classes in a fixed order; ``Example.label`` indexes this tuple (empty for generation).
        source, license: where the text comes from and under which terms (see LICENSES.md).
        examples: every example, train first, then validation, then test.
        kind: ``"classification"`` or ``"generation"``.
        instruction: the question put to an LLM before each input text.
    """

    name: str
    description: str
    labels: tuple[Label, ...]
    source: str
    license: str
    examples: tuple[Example, ...]
    kind: str = "classification"
    instruction: str = ""

    @property
    def is_generation(self) -> bool:
        return self.kind == "generation"

    @property
    def label_answers(self) -> list[str]:
        """The word an LLM should say for each label, in label order."""
        return [label.answer for label in self.labels]

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

    def answers(self, split: str) -> list[tuple[str, ...]]:
        """Accepted outputs per example of one split: a classification example's label answer as a
        1-tuple, so that one exact-match scorer (``answer_matches``) serves both kinds."""
        if self.is_generation:
            return [e.answers for e in self.split(split)]
        return [(self.labels[e.label].answer,) for e in self.split(split)]

    def counts(self, split: str) -> dict[str, int]:
        """Examples per label in one split (empty for generation tasks, which have no labels)."""
        if self.is_generation:
            return {}
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


def list_tasks(kind: str | None = "classification") -> list[str]:
    """Names of the shipped tasks of one kind (all kinds for ``None``), in catalogue order.

    The default is classification only: the encoder bed and the library trainer iterate this list
    and cannot score generation tasks, so those are listed only when asked for.

    Raises:
        ValueError: unknown kind.
    """
    if kind is not None and kind not in KINDS:
        raise ValueError(f"unknown task kind '{kind}'; choose one of {', '.join(KINDS)}")
    return [n for n, m in _metadata().items() if kind is None or m.get("kind", "classification") == kind]


@functools.lru_cache(maxsize=None)
def load_task(name: str) -> Task:
    """Read one shipped task (cached: tasks are immutable).

    Raises:
        TaskNotFoundError: no task of that name.
    """
    meta = _metadata().get(name)
    if meta is None:
        raise TaskNotFoundError(name, list_tasks(None))
    labels = tuple(Label(lab["name"], lab["description"], lab.get("answer", "")) for lab in meta["labels"])
    index = {lab.name: i for i, lab in enumerate(labels)}
    examples = []
    with open(tasks_dir() / meta["file"], encoding="utf-8") as f:
        for line in f:
            row = json.loads(line)
            if "answers" in row:
                examples.append(Example(row["id"], row["text"], -1, row["split"], tuple(row["answers"])))
            else:
                examples.append(Example(row["id"], row["text"], index[row["label"]], row["split"]))
    return Task(
        name=meta["name"],
        description=meta["description"],
        labels=labels,
        source=meta["source"],
        license=meta["license"],
        examples=tuple(examples),
        kind=meta.get("kind", "classification"),
        instruction=meta.get("instruction", ""),
    )


def resolve_task(task: str | Task) -> Task:
    """A ``Task`` from a task or its name."""
    return task if isinstance(task, Task) else load_task(task)


_QUOTES = {('"', '"'), ("'", "'"), ("`", "`"), ("\u201c", "\u201d"), ("\u2018", "\u2019")}


def normalise_answer(text: str) -> str:
    """The comparable form of an answer: lowercase, underscores as spaces, whitespace collapsed,
    surrounding quotes and a trailing period removed, so that ``' "Cold." '`` matches ``cold``
    and WordNet's ``facial_expression`` matches ``facial expression``."""
    out = " ".join(text.replace("_", " ").lower().split())
    while True:
        before = out
        if len(out) >= 2 and (out[0], out[-1]) in _QUOTES:
            out = out[1:-1].strip()
        if out.endswith("."):
            out = out[:-1].rstrip()
        if out == before:
            return out


def answer_matches(generated: str, answers: tuple[str, ...] | list[str]) -> bool:
    """The exact-match metric of generation tasks: the generated text up to its first newline,
    normalised, equals one normalised accepted answer. Only the first line counts because a small
    model often keeps talking after its answer; no partial credit, because a prefix-free answer
    set makes exact match unambiguous."""
    first = normalise_answer(generated.split("\n", 1)[0])
    return bool(first) and any(first == normalise_answer(a) for a in answers)
