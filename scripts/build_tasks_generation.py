"""Generation tasks and LLM prompt fields for ``scripts/build_tasks.py`` (imported by it, not run).

A generative base (SmolLM2-135M-Instruct) reads every task as an instruction prompt and answers
with a short word, so this module supplies two things the encoder tasks never needed:

* ``PROMPTS``: per task, the question put to the LLM before the input, and for classification
  tasks the word it should say for each label. Answers are lowercase, pairwise distinct and no
  answer is a prefix of another, so that greedy decoding of one answer can never be read as a
  different one.
* Two WordNet 3.0 tasks scored by greedy generation + exact match (rows ``{"id", "text",
  "answers", "split"}``, no label):

  - ``wn_antonym``: a head adjective -> the lemmas its direct antonym pointers (``!``, lexical,
    so per word: the pointer's source/target field picks the words) point at.
  - ``wn_hypernym``: a noun -> the lemmas of the direct hypernyms (``@``, ``@i``) of its most
    frequent sense (multiword lemmas kept, but a noun needs at least one single-word answer,
    because the prompt asks for one word).

  Only words that were seen in the SemCor tagged corpus (sense counts from ``cntlist.rev``) and
  are single lowercase ASCII words are kept, so that a 135M model has met them; the most frequent
  ones are taken first. Splits are by *group*, never by row: antonym pairs are symmetric
  (``hot -> cold`` and ``cold -> hot``), so a whole connected set of antonyms goes to one split,
  otherwise the test set would be the training set read backwards; hypernym inputs are grouped by
  their synset (``car`` and ``auto`` share every answer).
"""

from __future__ import annotations

import random
import re
from collections import defaultdict
from pathlib import Path

GEN_TRAIN, GEN_VAL, GEN_TEST = 850, 150, 275  # upper bounds for train; val/test filled to at least

# name -> (instruction, {label name: answer word}); generation tasks have no labels.
PROMPTS: dict[str, tuple[str, dict[str, str]]] = {
    "wn_noun_supersense": (
        "Which broad category does the noun defined by this dictionary definition belong to?",
        {
            "noun.animal": "animal", "noun.plant": "plant", "noun.food": "food", "noun.artifact": "artifact",
            "noun.person": "person", "noun.location": "location", "noun.body": "body",
            "noun.substance": "substance",
        },
    ),
    "wn_verb_supersense": (
        "What kind of action or event does the verb defined by this dictionary definition describe?",
        {
            "verb.motion": "motion", "verb.communication": "communication", "verb.consumption": "consumption",
            "verb.emotion": "emotion", "verb.perception": "perception", "verb.competition": "competition",
            "verb.creation": "creation", "verb.possession": "possession",
        },
    ),
    "wn_pos": (
        "What part of speech is the word defined by this dictionary definition?",
        {"noun": "noun", "verb": "verb", "adjective": "adjective", "adverb": "adverb"},
    ),
    "wn_adj_kind": (
        "What kind of adjective does this dictionary definition define?",
        {"adj.all": "descriptive", "adj.pert": "relational", "adj.ppl": "participial"},
    ),
    "wn_topic_domain": (
        "Which subject field does this dictionary definition belong to?",
        {
            "law": "law", "military": "military", "chemistry": "chemistry", "computer science": "computing",
            "Greek mythology": "mythology", "music": "music", "mathematics": "mathematics", "sport": "sport",
        },
    ),
    "wn_animal_class": (
        "Which class of animal does this dictionary definition describe?",
        {
            "bird": "bird", "fish": "fish", "insect": "insect", "mammal": "mammal", "reptile": "reptile",
            "mollusk": "mollusk", "crustacean": "crustacean", "arachnid": "arachnid",
        },
    ),
    "chat_topic": (
        "What is the topic of this line from a chatbot conversation?",
        {
            "ai": "artificial intelligence", "coding": "programming", "emotion": "feelings",
            "literature": "books", "psychology": "personality", "trivia": "trivia",
        },
    ),
    "chat_language": (
        "Which language is this sentence written in?",
        {
            name: name for name in
            ("english", "spanish", "portuguese", "italian", "dutch", "german", "indonesian", "turkish")
        },
    ),
    "wn_antonym": ("What is the antonym (opposite) of this adjective? Answer with one word.", {}),
    "wn_hypernym": ("What is a more general word (a hypernym) for this noun? Answer with one word.", {}),
}

GEN_DESCRIPTIONS = {
    "wn_antonym": "Name an antonym of a common English adjective (WordNet direct antonyms of head adjectives; "
    "any listed antonym counts).",
    "wn_hypernym": "Name a more general word (a direct WordNet hypernym of the most frequent sense) for a "
    "common English noun; any lemma of any direct hypernym counts.",
}

_MARKER = re.compile(r"\([a-z]+\)$")  # adjective syntactic markers: good(a), galore(ip)


def _simple(word: str) -> bool:
    """A single lowercase ASCII word: what a small LLM tokenizes and spells reliably."""
    return word.isascii() and word.isalpha() and word.islower()


def sense_counts(root: Path) -> dict[tuple[str, str, int], int]:
    """``(lemma, pos, sense_number) -> SemCor tag count`` from ``cntlist.rev`` (pos n/v/a/r)."""
    out: dict[tuple[str, str, int], int] = {}
    with open(root / "cntlist.rev", encoding="latin-1") as f:
        for line in f:
            key, sense_number, count = line.split()
            lemma, _, rest = key.partition("%")
            out[(lemma, "nvaar"[int(rest.split(":")[0]) - 1], int(sense_number))] = int(count)
    return out


def index_offsets(root: Path, name: str) -> dict[str, list[str]]:
    """``lemma -> synset offsets`` in sense order (most frequent first) from ``index.<name>``."""
    out: dict[str, list[str]] = {}
    with open(root / f"index.{name}", encoding="latin-1") as f:
        for line in f:
            if line.startswith("  "):
                continue
            fields = line.split()
            rest = fields[4 + int(fields[3]) :]  # after the pointer symbols: sense_cnt tagsense_cnt offsets
            out[fields[0]] = rest[2:]
    return out


def _data_lines(root: Path, name: str) -> dict[str, tuple[str, list[str], list[tuple[str, str, str, str]]]]:
    """``offset -> (ss_type, words, pointers)`` with the pointers' source/target field kept."""
    out = {}
    with open(root / f"data.{name}", encoding="latin-1") as f:
        for line in f:
            if line.startswith("  "):
                continue
            fields = line.partition(" | ")[0].split()
            w_cnt = int(fields[3], 16)
            words = [_MARKER.sub("", fields[4 + 2 * i]) for i in range(w_cnt)]
            i = 4 + 2 * w_cnt
            pointers = [tuple(fields[i + 1 + 4 * k : i + 5 + 4 * k]) for k in range(int(fields[i]))]
            out[fields[0]] = (fields[2], words, pointers)
    return out


def antonym_items(root: Path) -> list[tuple[str, str, list[str], int, str]]:
    """``(id, word, answers, frequency, group)`` for every frequent head adjective with antonyms."""
    counts = sense_counts(root)
    offsets = index_offsets(root, "adj")
    data = _data_lines(root, "adj")
    answers: dict[str, set[str]] = defaultdict(set)
    freq: dict[str, int] = defaultdict(int)
    first: dict[str, str] = {}
    for off in sorted(data):
        ss_type, words, pointers = data[off]
        if ss_type != "a":
            continue
        for sym, target, _pos, st in pointers:
            if sym != "!":
                continue
            src, tgt = int(st[:2], 16), int(st[2:], 16)
            target_words = data[target][1]
            sources = words if src == 0 else [words[src - 1]]
            for word in sources:
                if not _simple(word) or off not in offsets.get(word, []):
                    continue
                count = counts.get((word, "a", offsets[word].index(off) + 1), 0)
                found = {w for w in (target_words if tgt == 0 else [target_words[tgt - 1]]) if _simple(w)}
                if count <= 0 or not found:
                    continue
                first.setdefault(word, off)
                answers[word] |= found
                freq[word] += count
    # Union-find over input and answer words: a symmetric pair must not straddle two splits.
    parent: dict[str, str] = {}

    def root_of(w: str) -> str:
        parent.setdefault(w, w)
        while parent[w] != w:
            parent[w] = parent[parent[w]]
            w = parent[w]
        return w

    for word, ans in answers.items():
        for a in ans:
            ra, rb = root_of(word), root_of(a)
            if ra != rb:
                parent[max(ra, rb)] = min(ra, rb)
    return [
        (f"wn:a{first[w]}:{w}", w, sorted(answers[w]), freq[w], root_of(w)) for w in sorted(answers)
    ]


def hypernym_items(root: Path) -> list[tuple[str, str, list[str], int, str]]:
    """``(id, word, answers, frequency, group)`` for every frequent noun (first sense) with hypernyms."""
    counts = sense_counts(root)
    data = _data_lines(root, "noun")
    out = []
    for word, offs in sorted(index_offsets(root, "noun").items()):
        count = counts.get((word, "n", 1), 0)
        if not _simple(word) or count <= 0:
            continue
        lemmas: list[str] = []
        for sym, target, pos, _st in data[offs[0]][2]:
            if sym in ("@", "@i") and pos == "n":
                lemmas += [w.replace("_", " ") for w in data[target][1]]
        seen: set[str] = {word}
        answers = []
        for lemma in sorted(lemmas, key=lambda w: " " in w):  # single words first, stable otherwise
            if lemma.lower() not in seen:
                seen.add(lemma.lower())
                answers.append(lemma)
        if any(" " not in a for a in answers):  # the prompt asks for one word: one must be right
            out.append((f"wn:n{offs[0]}:{word}", word, answers, count, offs[0]))
    return out


def split_generation(name: str, items: list[tuple[str, str, list[str], int, str]], seed: int) -> list[dict]:
    """The most frequent words, split by group with a seeded shuffle: test, validation, then train.

    Groups are taken whole, so test and validation reach at least ``GEN_TEST``/``GEN_VAL`` rows and
    train stops before it would pass ``GEN_TRAIN``; words left over are the least frequent ones.
    """
    by_freq = sorted(items, key=lambda it: (-it[3], it[1]))
    groups: dict[str, list[tuple[str, str, list[str], int, str]]] = defaultdict(list)
    for it in by_freq:
        groups[it[4]].append(it)
    # Visit groups most-frequent-first in a seeded order within frequency bands of 100 groups, so
    # the common words are used and each split still gets a random mix of them.
    ranked = sorted(groups, key=lambda g: (-max(it[3] for it in groups[g]), g))
    rng = random.Random(f"{seed}:{name}")
    order: list[str] = []
    for start in range(0, len(ranked), 100):
        band = ranked[start : start + 100]
        rng.shuffle(band)
        order += band
    rows: list[dict] = []
    filled = {"test": 0, "validation": 0, "train": 0}
    for g in order:
        members = groups[g]
        if filled["test"] < GEN_TEST:
            split = "test"
        elif filled["validation"] < GEN_VAL:
            split = "validation"
        elif filled["train"] + len(members) <= GEN_TRAIN:
            split = "train"
        else:
            continue
        filled[split] += len(members)
        rows += [{"id": i, "text": w, "answers": a, "split": split} for i, w, a, _f, _g in members]
    rank = {"train": 0, "validation": 1, "test": 2}
    rows.sort(key=lambda r: (rank[r["split"]], r["id"]))
    return rows


def generation_tasks(root: Path, seed: int, source: str, license: str) -> list[tuple[dict, list[dict]]]:
    """``(tasks.json entry, jsonl rows)`` for each generation task."""
    out = []
    for name, items in (("wn_antonym", antonym_items(root)), ("wn_hypernym", hypernym_items(root))):
        rows = split_generation(name, items, seed)
        meta = {
            "name": name,
            "kind": "generation",
            "description": GEN_DESCRIPTIONS[name],
            "instruction": PROMPTS[name][0],
            "labels": [],
            "source": source,
            "license": license,
            "file": f"{name}.jsonl",
            "counts": {s: sum(1 for r in rows if r["split"] == s) for s in ("train", "validation", "test")},
            "seed": seed,
        }
        out.append((meta, rows))
    return out
