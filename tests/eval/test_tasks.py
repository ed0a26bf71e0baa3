"""The shipped task files: well-formed, split cleanly, described, licensed."""

from __future__ import annotations

import json

import pytest

from adapterhub.tasks import TaskNotFoundError, list_tasks, load_task, tasks_dir


def test_at_least_six_tasks_with_different_label_spaces():
    names = list_tasks()
    assert len(names) >= 6
    label_sets = {tuple(load_task(n).label_names) for n in names}
    assert len(label_sets) == len(names)


@pytest.mark.parametrize("name", list_tasks())
def test_task_is_well_formed(name):
    task = load_task(name)
    meta = {t["name"]: t for t in json.loads((tasks_dir() / "tasks.json").read_text())["tasks"]}[name]
    assert task.description and task.source and task.license
    assert len(task.labels) >= 2 and all(lab.description for lab in task.labels)
    assert len(set(task.label_descriptions)) == len(task.labels)
    texts = {split: task.texts(split) for split in ("train", "validation", "test")}
    for split, split_texts in texts.items():
        assert task.counts(split) == meta["counts"][split]
        assert all(t.strip() for t in split_texts)
        assert min(task.counts(split).values()) >= 5, f"{split} has a nearly empty class"
    lower = {s: {t.lower() for t in ts} for s, ts in texts.items()}
    assert not lower["train"] & lower["test"] and not lower["train"] & lower["validation"]
    assert not lower["validation"] & lower["test"]
    assert len({e.id for e in task.examples}) == len(task.examples)
    assert max(task.counts("train").values()) <= 200 and max(task.counts("test").values()) <= 60


def test_unknown_task_lists_the_known_ones():
    with pytest.raises(TaskNotFoundError, match="wn_pos"):
        load_task("no_such_task")


def test_licences_are_shipped():
    text = (tasks_dir() / "LICENSES.md").read_text()
    assert "Princeton University" in text and "BSD 3-Clause" in text
