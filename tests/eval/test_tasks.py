"""The shipped task files: well-formed, split cleanly, described, licensed."""

from __future__ import annotations

import json

import pytest

from adapterhub.tasks import TaskNotFoundError, answer_matches, list_tasks, load_task, normalise_answer, tasks_dir


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


# ----------------------------------------------------------------------------- LLM prompts, generation

GENERATION = ["wn_antonym", "wn_hypernym"]


def test_list_tasks_defaults_to_classification_only():
    assert list_tasks() == [
        "wn_noun_supersense", "wn_verb_supersense", "wn_pos", "wn_adj_kind",
        "wn_topic_domain", "wn_animal_class", "chat_topic", "chat_language",
    ]
    assert list_tasks("classification") == list_tasks()
    assert list_tasks("generation") == GENERATION
    assert list_tasks(None) == list_tasks() + GENERATION
    with pytest.raises(ValueError, match="kind"):
        list_tasks("regression")


@pytest.mark.parametrize("name", list_tasks())
def test_classification_task_has_prompt_and_prefix_free_answers(name):
    task = load_task(name)
    assert task.kind == "classification" and not task.is_generation
    assert task.instruction.endswith("?")
    answers = task.label_answers
    assert len(set(answers)) == len(answers)
    assert all(a and a == a.lower() and a == a.strip() for a in answers)
    for a in answers:
        assert not any(b != a and b.startswith(a) for b in answers), f"{a!r} is a prefix of another answer"
    for split in ("train", "validation", "test"):
        assert task.answers(split) == [(answers[i],) for i in task.label_ids(split)]


@pytest.mark.parametrize("name", GENERATION)
def test_generation_task_is_well_formed(name):
    task = load_task(name)
    meta = {t["name"]: t for t in json.loads((tasks_dir() / "tasks.json").read_text())["tasks"]}[name]
    assert task.is_generation and task.kind == "generation" and task.labels == ()
    assert task.description and task.source and task.license and task.instruction
    inputs = {}
    for split in ("train", "validation", "test"):
        examples = task.split(split)
        assert len(examples) == meta["counts"][split]
        assert all(e.label == -1 and e.answers and all(a.strip() for a in e.answers) for e in examples)
        assert task.answers(split) == [e.answers for e in examples]
        inputs[split] = [e.text for e in examples]
        assert all(t.isalpha() and t == t.lower() for t in inputs[split])
    assert 600 <= len(inputs["train"]) <= 900
    assert 140 <= len(inputs["validation"]) <= 170 and 250 <= len(inputs["test"]) <= 300
    flat = [t for ts in inputs.values() for t in ts]
    assert len(flat) == len(set(flat)), "an input occurs twice"
    assert len({e.id for e in task.examples}) == len(task.examples)
    assert all(any(" " not in a for a in e.answers) for e in task.examples)  # one-word answer exists


def test_antonym_splits_share_no_word_at_all():
    """Antonyms are symmetric: a word that is an input or an answer in one split is in no other."""
    task = load_task("wn_antonym")
    words = {s: {w for e in task.split(s) for w in (e.text, *e.answers)} for s in ("train", "validation", "test")}
    assert not words["train"] & words["test"] and not words["train"] & words["validation"]
    assert not words["validation"] & words["test"]
    by_text = {e.text: e.answers for e in task.examples}
    assert "cold" in by_text["hot"] or "hot" not in by_text


@pytest.mark.parametrize(
    ("generated", "answers", "expected"),
    [
        ("cold", ("cold",), True),
        ('  "Cold." ', ("cold",), True),
        ("\u201cCold\u201d", ("cold",), True),
        ("cold\nBecause hot is the opposite.", ("cold",), True),
        ("Facial   Expression", ("facial_expression",), True),
        ("animal", ("mammal", "animal"), True),
        ("colder", ("cold",), False),
        ("The answer is cold", ("cold",), False),
        ("", ("cold",), False),
        ("\ncold", ("cold",), False),
        ("cold", (), False),
    ],
)
def test_answer_matches(generated, answers, expected):
    assert answer_matches(generated, answers) is expected


def test_normalise_answer():
    assert normalise_answer("  'Big_Cat.'  ") == "big cat"
    assert normalise_answer("A\t B ") == "a b"
