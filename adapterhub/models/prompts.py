"""Shipped tasks as instruction prompts for a causal LM: one fixed template, zero-shot or few-shot.

The template (the user's turn; the model's chat template wraps it)::

    {task.instruction}
    Answer with one of: {label answers, comma-separated}.      <- classification tasks only

    {input text}

and the assistant's answer is the label's short answer word (``Label.answer``) or, for a
generation task, the expected word. Listing the options tells a zero-shot model the answer space,
so the zero-shot baseline is a fair one. A few-shot prompt puts ``k`` solved examples from the
train split before the question as earlier chat turns (the format an instruct model was tuned
on), the same ``k`` for every question of a task (drawn once with a fixed seed, one per label in
turn so that no label is missing), so its cost and its answer are deterministic.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

from adapterhub.tasks import Task

FEW_SHOT = 5
"""In-context examples of the few-shot baseline."""


def user_message(task: Task, text: str) -> str:
    """The user's turn asking ``task``'s question about ``text``."""
    if task.is_generation:
        return f"{task.instruction}\n\n{text}"
    return f"{task.instruction}\nAnswer with one of: {', '.join(task.label_answers)}.\n\n{text}"


def task_messages(task: Task, text: str, shots: Sequence[tuple[str, str]] = ()) -> list[dict[str, str]]:
    """The chat for one question: the solved ``shots`` (text, answer) as earlier turns, then the question."""
    messages: list[dict[str, str]] = []
    for shot_text, shot_answer in shots:
        messages.append({"role": "user", "content": user_message(task, shot_text)})
        messages.append({"role": "assistant", "content": shot_answer})
    messages.append({"role": "user", "content": user_message(task, text)})
    return messages


def target_answers(task: Task, split: str) -> list[str]:
    """The answer each example of ``split`` is trained towards (a generation task's first answer)."""
    return [answers[0] for answers in task.answers(split)]


def few_shot_examples(task: Task, k: int = FEW_SHOT, seed: int = 0) -> list[tuple[str, str]]:
    """``k`` solved train examples: one per label in turn (classification) or ``k`` at random (generation)."""
    rng = random.Random(f"{task.name}:{seed}")
    train = task.split("train")
    if task.is_generation:
        picked = rng.sample(train, min(k, len(train)))
        return [(e.text, e.answers[0]) for e in picked]
    by_label: dict[int, list] = {}
    for e in train:
        by_label.setdefault(e.label, []).append(e)
    order = rng.sample(sorted(by_label), len(by_label))
    shots = []
    for i in range(min(k, len(train))):
        pool = by_label[order[i % len(order)]]
        e = pool[rng.randrange(len(pool))]
        shots.append((e.text, task.labels[e.label].answer))
    return shots
