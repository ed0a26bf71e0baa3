"""Rebuild the shipped evaluation tasks under ``adapterhub/data/tasks/`` from real labelled text.

Sources (both installed from package registries, nothing downloaded at run time):

* WordNet 3.0 glosses from Debian's ``wordnet-base`` (``apt-get install -y wordnet-base``; files in
  ``/usr/share/wordnet``). Every synset is labelled by its lexicographer file (``noun.animal``),
  its part of speech, its topic domain (``;c`` pointers) and its hypernyms (``@``/``@i``).
* ``chatterbot-corpus`` (PyPI, BSD-3-Clause): YAML dialogues in one file per topic and one folder
  per language.

Each task is written as ``<task>.jsonl`` (one ``{"id", "text", "label", "split"}`` object per line)
and described in ``tasks.json`` (label descriptions, source, licence, counts). Splits are fixed by
a seeded shuffle per class so that a rebuild gives byte-identical files. Texts that occur with two
different labels in one task are dropped (they cannot be classified) and duplicates are kept once.

Two generation tasks (``wn_antonym``, ``wn_hypernym``: rows ``{"id", "text", "answers", "split"}``,
scored by greedy generation + exact match) and the LLM prompt fields of every task (``instruction``,
and an ``answer`` word per label) come from ``scripts/build_tasks_generation.py``, which says why.

Run:
    apt-get install -y wordnet-base
    .venv/bin/python scripts/build_tasks.py            # writes adapterhub/data/tasks/
    .venv/bin/python scripts/build_tasks.py --check    # rebuild in memory, compare to shipped

The tests and the demo only read the shipped files; they never need ``wordnet-base``.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import tempfile
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import yaml
from build_tasks_generation import PROMPTS, generation_tasks

WORDNET_DIR = Path("/usr/share/wordnet")
OUT_DIR = Path(__file__).resolve().parent.parent / "adapterhub" / "data" / "tasks"
SEED = 20240601
MAX_TRAIN, MAX_VAL, MAX_TEST = 200, 40, 60
TEST_FRACTION, VAL_FRACTION = 0.25, 0.15

WORDNET_SOURCE = "WordNet 3.0 (Princeton University), Debian package wordnet-base"
WORDNET_LICENSE = "WordNet 3.0 license (see LICENSES.md)"
CHATTERBOT_SOURCE = "chatterbot-corpus 1.3.3 (PyPI), https://github.com/gunthercox/chatterbot-corpus"
CHATTERBOT_LICENSE = "BSD-3-Clause (see LICENSES.md)"

# WordNet's lexicographer file numbers (the ``lex_filenum`` field of data.* lines), see lexnames(5WN).
LEXNAMES = [
    "adj.all", "adj.pert", "adv.all", "noun.Tops", "noun.act", "noun.animal", "noun.artifact",
    "noun.attribute", "noun.body", "noun.cognition", "noun.communication", "noun.event",
    "noun.feeling", "noun.food", "noun.group", "noun.location", "noun.motive", "noun.object",
    "noun.person", "noun.phenomenon", "noun.plant", "noun.possession", "noun.process",
    "noun.quantity", "noun.relation", "noun.shape", "noun.state", "noun.substance", "noun.time",
    "verb.body", "verb.change", "verb.cognition", "verb.communication", "verb.competition",
    "verb.consumption", "verb.contact", "verb.creation", "verb.emotion", "verb.motion",
    "verb.perception", "verb.possession", "verb.social", "verb.stative", "verb.weather", "adj.ppl",
]


@dataclass
class Synset:
    offset: str
    pos: str  # n, v, a, s, r
    lexname: str
    words: list[str]
    gloss: str  # definition only, examples stripped
    pointers: list[tuple[str, str, str]] = field(default_factory=list)  # (symbol, offset, pos)


def parse_wordnet(root: Path = WORDNET_DIR) -> dict[tuple[str, str], Synset]:
    """All synsets keyed by ``(pos_file, offset)`` where pos_file is n/v/a/r."""
    if not (root / "data.noun").exists():
        sys.exit(f"{root}/data.noun not found: install WordNet with `apt-get install -y wordnet-base`")
    synsets: dict[tuple[str, str], Synset] = {}
    for pos_file, name in (("n", "noun"), ("v", "verb"), ("a", "adj"), ("r", "adv")):
        with open(root / f"data.{name}", encoding="latin-1") as f:
            for line in f:
                if line.startswith("  "):  # licence header
                    continue
                head, _, gloss = line.partition(" | ")
                fields = head.split()
                offset, lex_filenum, ss_type = fields[0], int(fields[1]), fields[2]
                w_cnt = int(fields[3], 16)
                words = [fields[4 + 2 * i].replace("_", " ") for i in range(w_cnt)]
                i = 4 + 2 * w_cnt
                p_cnt = int(fields[i])
                pointers = [
                    (fields[i + 1 + 4 * k], fields[i + 2 + 4 * k], fields[i + 3 + 4 * k]) for k in range(p_cnt)
                ]
                definition = gloss.strip().split('; "')[0].split(';"')[0].strip().rstrip(";").strip()
                synsets[(pos_file, offset)] = Synset(
                    offset, ss_type, LEXNAMES[lex_filenum], words, definition, pointers
                )
    return synsets


def _pos_key(pos: str) -> str:
    return "a" if pos == "s" else pos


def hypernym_closure(synsets: dict[tuple[str, str], Synset], key: tuple[str, str]) -> set[str]:
    """Offsets of every (instance) hypernym above a noun synset."""
    seen: set[str] = set()
    stack = [key]
    while stack:
        for sym, off, pos in synsets[stack.pop()].pointers:
            if sym in ("@", "@i") and pos == "n" and off not in seen:
                seen.add(off)
                stack.append(("n", off))
    return seen


# ----------------------------------------------------------------------------- task definitions


def strip_leading_parenthesis(text: str) -> str:
    """``"(law) a rule"`` -> ``"a rule"``; text without a leading ``(...)`` is returned as is."""
    if text.startswith("(") and ")" in text:
        return text[text.index(")") + 1 :].strip()
    return text


@dataclass
class TaskSpec:
    name: str
    description: str
    labels: dict[str, str]  # label name -> natural-language description (the similarity prompt)
    source: str
    license: str
    items: dict[str, list[tuple[str, str]]] = field(default_factory=dict)  # label -> [(source_id, text)]


def wn_tasks(syn: dict[tuple[str, str], Synset]) -> list[TaskSpec]:
    tasks: list[TaskSpec] = []

    noun = TaskSpec(
        "wn_noun_supersense",
        "Which broad semantic category (WordNet lexicographer file) a noun's dictionary definition belongs to.",
        {
            "noun.animal": "an animal, such as a mammal, bird, fish, insect or other creature",
            "noun.plant": "a plant, such as a tree, flower, shrub, herb, grass or fungus",
            "noun.food": "food or drink that people eat or consume",
            "noun.artifact": "a man-made object, tool, device, building or structure",
            "noun.person": "a person, a human being described by role, job or character",
            "noun.location": "a place, region, city, country or geographic location",
            "noun.body": "a part of the human or animal body, an organ or tissue",
            "noun.substance": "a chemical substance, material or compound",
        },
        WORDNET_SOURCE,
        WORDNET_LICENSE,
    )
    verb = TaskSpec(
        "wn_verb_supersense",
        "Which semantic category (WordNet lexicographer file) a verb's dictionary definition belongs to.",
        {
            "verb.motion": "moving, travelling or changing position",
            "verb.communication": "speaking, writing, telling or communicating something",
            "verb.consumption": "eating, drinking or using up something",
            "verb.emotion": "feeling an emotion such as love, fear or anger",
            "verb.perception": "seeing, hearing, smelling or otherwise perceiving",
            "verb.competition": "fighting, competing or playing a game or sport",
            "verb.creation": "making, building, creating or producing something",
            "verb.possession": "owning, buying, selling, giving or taking possession of something",
        },
        WORDNET_SOURCE,
        WORDNET_LICENSE,
    )
    pos = TaskSpec(
        "wn_pos",
        "The part of speech of the word that a WordNet dictionary definition defines.",
        {
            "noun": "the definition of a noun: a thing, person, place or idea",
            "verb": "the definition of a verb: an action or process someone does",
            "adjective": "the definition of an adjective: a quality or property of something",
            "adverb": "the definition of an adverb: the manner, degree or way in which something is done",
        },
        WORDNET_SOURCE,
        WORDNET_LICENSE,
    )
    adj = TaskSpec(
        "wn_adj_kind",
        "The kind of adjective a WordNet definition defines: descriptive, relational (pertaining to a noun) "
        "or participial (formed from a verb).",
        {
            "adj.all": "a descriptive adjective naming a quality, such as big, happy or bright",
            "adj.pert": "a relational adjective meaning of or relating to a noun, such as a field, place or person",
            "adj.ppl": "a participial adjective formed from a verb, describing something that has been done",
        },
        WORDNET_SOURCE,
        WORDNET_LICENSE,
    )
    for t in (noun, verb, pos, adj):
        t.items = defaultdict(list)
    pos_names = {"n": "noun", "v": "verb", "a": "adjective", "s": "adjective", "r": "adverb"}
    for (pf, off), s in sorted(syn.items()):
        sid = f"wn:{pf}{off}"
        if s.lexname in noun.labels:
            noun.items[s.lexname].append((sid, s.gloss))
        if s.lexname in verb.labels:
            verb.items[s.lexname].append((sid, s.gloss))
        pos.items[pos_names[s.pos]].append((sid, s.gloss))
        if s.lexname in adj.labels:
            adj.items[s.lexname].append((sid, s.gloss))
    tasks += [noun, verb, pos, adj]

    # Topic domains: ``;c`` pointers name the domain synset (law, military, ...). Sports are pooled.
    # Many such glosses open with the answer in parentheses ("(law) ...", "(of a baseball pitch)
    # ..."): that prefix is removed, otherwise the task is a string match, not a classification.
    domain = TaskSpec(
        "wn_topic_domain",
        "The subject field (WordNet topic domain) that a dictionary definition belongs to "
        "(leading parenthesised hints such as '(law)' removed).",
        {
            "law": "law, courts, legal proceedings and legal rights",
            "military": "the military, armed forces, weapons and warfare",
            "chemistry": "chemistry, chemical elements, compounds and reactions",
            "computer science": "computer science, computing, software and programming",
            "Greek mythology": "Greek mythology, ancient Greek gods, goddesses and heroes",
            "music": "music, musical instruments, notes and performance",
            "mathematics": "mathematics, numbers, geometry and equations",
            "sport": "sports and games such as baseball, golf or football",
        },
        WORDNET_SOURCE,
        WORDNET_LICENSE,
    )
    domain_words = {
        "law": {"law"}, "military": {"military"}, "chemistry": {"chemistry"},
        "computer science": {"computer science"}, "Greek mythology": {"Greek mythology"},
        "music": {"music"}, "mathematics": {"mathematics"},
        "sport": {"sport", "baseball", "golf", "football", "basketball", "tennis"},
    }
    domain.items = defaultdict(list)
    for (pf, off), s in sorted(syn.items()):
        labels = set()
        for sym, doff, dpos in s.pointers:
            if sym == ";c" and dpos == "n":
                head = syn[("n", doff)].words[0]
                labels |= {lab for lab, ws in domain_words.items() if head in ws}
        if len(labels) == 1:
            domain.items[labels.pop()].append((f"wn:{pf}{off}", strip_leading_parenthesis(s.gloss)))
    tasks.append(domain)

    # Animal classes: the taxonomic class above a noun.animal synset (via hypernym closure).
    animal = TaskSpec(
        "wn_animal_class",
        "The zoological class of the animal that a WordNet definition describes.",
        {
            "bird": "a bird: a feathered, winged, egg-laying animal",
            "fish": "a fish: a cold-blooded aquatic animal with gills and fins",
            "insect": "an insect: a small six-legged invertebrate such as a beetle, fly or ant",
            "mammal": "a mammal: a warm-blooded furry animal that nurses its young",
            "reptile": "a reptile: a scaly cold-blooded animal such as a snake, lizard or turtle",
            "mollusk": "a mollusk: a soft-bodied invertebrate such as a snail, clam or octopus",
            "crustacean": "a crustacean: a hard-shelled aquatic arthropod such as a crab, shrimp or lobster",
            "arachnid": "an arachnid: an eight-legged arthropod such as a spider, scorpion, mite or tick",
        },
        WORDNET_SOURCE,
        WORDNET_LICENSE,
    )
    class_offsets = {
        "bird": "01503061", "fish": "02512053", "insect": "02159955", "mammal": "01861778",
        "reptile": "01661091", "mollusk": "01940736", "crustacean": "01974773", "arachnid": "01769347",
    }
    by_offset = {v: k for k, v in class_offsets.items()}
    animal.items = defaultdict(list)
    for (pf, off), s in sorted(syn.items()):
        if pf != "n" or s.lexname != "noun.animal":
            continue
        hits = {by_offset[o] for o in hypernym_closure(syn, (pf, off)) if o in by_offset}
        if len(hits) == 1:
            animal.items[hits.pop()].append((f"wn:{pf}{off}", s.gloss))
    tasks.append(animal)
    return tasks


def chatterbot_tasks() -> list[TaskSpec]:
    import chatterbot_corpus

    root = Path(chatterbot_corpus.__file__).resolve().parent / "data"

    def utterances(paths: list[Path]) -> list[str]:
        out: list[str] = []
        for path in sorted(paths):
            data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
            for conv in data.get("conversations") or []:
                for u in conv:
                    if isinstance(u, str) and len(u.split()) >= 3:
                        out.append(" ".join(u.split()))
        return out

    topic = TaskSpec(
        "chat_topic",
        "The topic of a chatbot conversation line (question or answer) from the English chatterbot corpus.",
        {
            "ai": "artificial intelligence, robots, and the chatbot talking about itself as a machine",
            "coding": "computer programming, programming languages and writing code",
            "emotion": "feelings and emotions such as happiness, sadness, anger or love",
            "literature": "books, authors, novels, poems and literature",
            "psychology": "personal remarks about someone's character, personality or behaviour",
            "trivia": "trivia and general knowledge questions about history, geography and facts",
        },
        CHATTERBOT_SOURCE,
        CHATTERBOT_LICENSE,
    )
    topic.items = defaultdict(list)
    for label in topic.labels:
        for i, u in enumerate(utterances([root / "english" / f"{label}.yml"])):
            topic.items[label].append((f"chatterbot:english/{label}:{i}", u))

    languages = ["english", "spanish", "portuguese", "italian", "dutch", "german", "indonesian", "turkish"]
    lang = TaskSpec(
        "chat_language",
        "The language a chatbot conversation line is written in (chatterbot corpus, one folder per language).",
        {name: f"a sentence written in the {name.capitalize()} language" for name in languages},
        CHATTERBOT_SOURCE,
        CHATTERBOT_LICENSE,
    )
    lang.items = defaultdict(list)
    for name in languages:
        for i, u in enumerate(utterances(list((root / name).glob("*.yml")))):
            lang.items[name].append((f"chatterbot:{name}:{i}", u))
    return [topic, lang]


# ----------------------------------------------------------------------------- splitting and writing


def split_task(task: TaskSpec, seed: int = SEED) -> list[dict]:
    """Dedupe texts, drop ambiguous ones, then a seeded per-class test/validation/train split."""
    labels_of: dict[str, set[str]] = defaultdict(set)
    for label, items in task.items.items():
        for _, text in items:
            labels_of[text.lower()].add(label)
    rows: list[dict] = []
    for label in task.labels:  # label order from the spec, stable
        seen: set[str] = set()
        pool = []
        for sid, text in sorted(task.items.get(label, []), key=lambda x: x[0]):
            key = text.lower()
            if not text or key in seen or len(labels_of[key]) > 1:
                continue
            seen.add(key)
            pool.append((sid, text))
        if len(pool) < 20:
            raise SystemExit(f"task {task.name}: label {label!r} has only {len(pool)} examples")
        rng = random.Random(f"{seed}:{task.name}:{label}")
        rng.shuffle(pool)
        n_test = min(MAX_TEST, round(TEST_FRACTION * len(pool)))
        n_val = min(MAX_VAL, round(VAL_FRACTION * len(pool)))
        parts = {
            "test": pool[:n_test],
            "validation": pool[n_test : n_test + n_val],
            "train": pool[n_test + n_val : n_test + n_val + MAX_TRAIN],
        }
        for split, items in parts.items():
            rows += [{"id": sid, "text": text, "label": label, "split": split} for sid, text in items]
    order = {"train": 0, "validation": 1, "test": 2}
    rows.sort(key=lambda r: (order[r["split"]], r["id"]))
    return rows


def _atomic_write(path: Path, data: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; shipped files must be world-readable
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def build(out_dir: Path = OUT_DIR) -> dict[str, str]:
    """Every output file's name -> contents."""
    syn = parse_wordnet()
    tasks = wn_tasks(syn) + chatterbot_tasks()
    files: dict[str, str] = {}
    meta = []
    for task in tasks:
        rows = split_task(task)
        files[f"{task.name}.jsonl"] = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
        counts = {
            split: {lab: sum(1 for r in rows if r["split"] == split and r["label"] == lab) for lab in task.labels}
            for split in ("train", "validation", "test")
        }
        instruction, answers = PROMPTS[task.name]
        meta.append(
            {
                "name": task.name,
                "kind": "classification",
                "description": task.description,
                "instruction": instruction,
                "labels": [{"name": k, "description": v, "answer": answers[k]} for k, v in task.labels.items()],
                "source": task.source,
                "license": task.license,
                "file": f"{task.name}.jsonl",
                "counts": counts,
                "seed": SEED,
            }
        )
    for entry, rows in generation_tasks(WORDNET_DIR, SEED, WORDNET_SOURCE, WORDNET_LICENSE):
        files[entry["file"]] = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
        meta.append(entry)
    files["tasks.json"] = json.dumps({"version": 1, "tasks": meta}, indent=2, ensure_ascii=False) + "\n"
    return files


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=OUT_DIR)
    parser.add_argument("--check", action="store_true", help="compare a rebuild with the shipped files")
    args = parser.parse_args()
    files = build(args.out)
    if args.check:
        stale = [
            n for n, text in files.items()
            if not (args.out / n).exists() or (args.out / n).read_text("utf-8") != text
        ]
        if stale:
            sys.exit(f"shipped task files differ from a rebuild: {', '.join(stale)}")
        print("shipped task files match a rebuild")
        return
    for name, text in files.items():
        _atomic_write(args.out / name, text)
    for m in json.loads(files["tasks.json"])["tasks"]:
        n = {s: c if isinstance(c, int) else sum(c.values()) for s, c in m["counts"].items()}
        kind = f"{len(m['labels'])} classes" if m["labels"] else "generation"
        print(f"{m['name']:22s} {kind:10s}  train {n['train']:5d}  val {n['validation']:4d}  test {n['test']:4d}")


if __name__ == "__main__":
    main()
