"""``route_quality``: how well routers turn unlabeled queries into adapter mixtures, on the shipped bed.

The experiment of issue 10 ("Mixed unlabeled queries", "Unseen tasks"), shared by
``bench/route_quality.py``, which writes ``docs/routing.md``/``.json``/``.png``:

- a held-out **stream**: up to ``per_task`` (150) examples drawn with a fixed seed from each shipped
  task's test split; a query carries no task name, yet is scored with its own task's candidate
  labels (the similarity protocol, ``adapterhub.eval.evaluate`` with one mixture row per query);
- (a) **text only**: the prototype and the learned router (top-1 and top-3), Arrow, the hedged
  router (an even 1/sqrt(m) mixture of the learned router's most likely adapters up to a posterior
  mass chosen on validation: one adapter when it is sure, several when the text is ambiguous),
  beside the oracle (own adapter), the uniform mixtures of all adapters (1/sqrt(n) and 1/n each),
  zero-shot and the best all-task merge of ``docs/merge_quality.json``; routing accuracy and the
  task confusion of each router's top-1;
  and the boosted router (the uniform mixture plus extra weight on the learned router's top-1);
- (b) **text + candidate labels**: the label set names the task, so routing is exact and must
  reproduce the oracle's predictions (checked, not assumed);
- **unseen tasks**: each task (and the dropped ``wn_topic_domain``) routed over the other adapters.

Router settings that are chosen (the hedged router's posterior mass, the boost) are chosen on a stream
drawn the same way from the VALIDATION splits; the report is on test. Routers see only what a
deployed one has: the query text, each adapter's stored examples (``adapterhub_examples.jsonl``,
32 train texts) and the adapters. Arrow routes each token inside the model
(``adapterhub.route.arrow.arrow_attached``), so it has its own path: queries and label descriptions
are embedded with Arrow attached, each text routing itself.
"""

from __future__ import annotations

import json
import math
import random
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch

from adapterhub.errors import InvalidParameterError
from adapterhub.route.learned import boosted_weights, nucleus_weights
from adapterhub.tasks import Task, load_task
from adapterhub.threads import torch_threads

ProgressFn = Callable[[str], None]

UNSEEN_EXTRA_TASKS = ("wn_topic_domain",)
"""Tasks without a shipped adapter that the unseen-task study also routes (dropped from the library)."""

PROTOTYPE_TEMPERATURE = 0.05
"""Softmax temperature on cosines for the prototype router's top-k mixture (the adapters' own
training temperature: cosines differ by hundredths, so T = 1 would make any top-3 mixture even)."""

LEARNED_TEMPERATURE = 1.0
"""The learned router's logits are a fitted posterior already; T = 1 keeps it."""

ARROW_TEMPERATURE = 1.0
"""PEFT's Arrow default; Arrow's scores |<x, v>| are raw projections, not cosines."""

HEDGE_MASSES = (0.0, 0.7, 0.8, 0.9, 1.0)
"""Posterior masses the hedged router tries on validation (0: top-1; 1: uniform over all)."""

BOOSTS = (0.1, 0.25, 0.5)
"""Extra weight the boosted router tries on validation for the learned router's top-1 adapter."""


def held_out_stream(tasks: Sequence[str], split: str, per_task: int, *, seed: int = 0) -> dict[str, Task]:
    """Per task, a ``Task`` holding only ``per_task`` examples of ``split`` (all if fewer), drawn with a
    fixed string seed (independent of ``PYTHONHASHSEED``), kept in file order."""
    out = {}
    for name in tasks:
        task = load_task(name)
        rows = task.split(split)
        keep = set(random.Random(f"{name}:{split}:{seed}").sample(range(len(rows)), min(per_task, len(rows))))
        out[name] = replace(task, examples=tuple(e for i, e in enumerate(rows) if i in keep))
    return out


def label_set_weights(label_sets: Sequence[Sequence[str]], inventory: Mapping[str, Sequence[str]]) -> torch.Tensor:
    """Setting (b): route each query by its candidate label set to the adapter trained on exactly that set.

    Args:
        label_sets: per query, its candidate label names (order ignored).
        inventory: adapter name → the label names it was trained on (``adapterhub_meta.json``).

    Returns:
        ``(q, n_adapters)`` one-hot weights, columns in ``inventory`` order.

    Raises:
        InvalidParameterError: a label set no adapter (or more than one) was trained on.
    """
    names = list(inventory)
    index: dict[frozenset[str], list[int]] = {}
    for i, name in enumerate(names):
        index.setdefault(frozenset(inventory[name]), []).append(i)
    w = torch.zeros(len(label_sets), len(names))
    for q, labels in enumerate(label_sets):
        hits = index.get(frozenset(labels), [])
        if len(hits) != 1:
            raise InvalidParameterError(
                f"query {q}: {'no adapter' if not hits else 'several adapters'} trained on labels {sorted(labels)}"
            )
        w[q, hits[0]] = 1.0
    return w


class Bed:
    """Adapters, routers and cached base embeddings of the streams: everything the settings share."""

    def __init__(self, library: str | Path | None, per_task: int, progress: ProgressFn) -> None:
        from adapterhub.eval.library import find_library, load_library
        from adapterhub.models.base import cached_base_model
        from adapterhub.route.learned import LearnedRouter
        from adapterhub.route.prototype import EXAMPLES_FILE, PrototypeRouter, read_examples

        self.progress = progress
        self.model = cached_base_model()
        root = find_library(library)
        lib = load_library(root)
        self.names = list(lib)
        self.adapters = [lib[n][0] for n in self.names]
        self.label_names = {n: [lab["name"] for lab in lib[n][1]["labels"]] for n in self.names}
        self.example_emb = {
            n: self.model.encode(read_examples(root / n / EXAMPLES_FILE), batch_size=32) for n in self.names
        }
        protos = {n: torch.nn.functional.normalize(e.mean(dim=0), dim=0) for n, e in self.example_emb.items()}
        self.prototype = PrototypeRouter(protos)
        self.learned = LearnedRouter.fit(self.example_emb)
        self.per_task = per_task
        self.arrow_protos: list[Any] | None = None
        self._streams: dict[tuple[str, tuple[str, ...]], dict[str, Task]] = {}
        self._emb: dict[tuple[str, str], torch.Tensor] = {}

    def stream(self, split: str, tasks: Sequence[str] | None = None) -> dict[str, Task]:
        key = (split, tuple(tasks or self.names))
        if key not in self._streams:
            self._streams[key] = held_out_stream(key[1], split, self.per_task)
        return self._streams[key]

    def base_embeddings(self, split: str, task: str) -> torch.Tensor:
        """Bare-base embeddings of one task's stream queries (computed once: every router reads them)."""
        if (split, task) not in self._emb:
            sub = held_out_stream([task], split, self.per_task)[task]
            self._emb[(split, task)] = self.model.encode(sub.texts(split))
        return self._emb[(split, task)]

    def evaluate(
        self, split: str, weights: Mapping[str, torch.Tensor | None], names: Sequence[str] | None = None
    ) -> dict[str, Any]:
        """Per-task ``EvalResult`` of per-query weights (``None``: zero-shot) over ``names`` adapters."""
        from adapterhub.eval.evaluate import evaluate

        names = list(names or self.names)
        adapters = [self.adapters[self.names.index(n)] for n in names]
        out = {}
        for task, w in weights.items():
            sub = held_out_stream([task], split, self.per_task)[task]
            if w is None:
                out[task] = evaluate(None, sub, split=split, model=self.model)
            else:
                out[task] = evaluate(adapters, sub, weights=w, split=split, model=self.model)
        return out


def summarise(results: Mapping[str, Any], owners: Mapping[str, int] | None = None,
              top1: Mapping[str, torch.Tensor] | None = None) -> dict[str, Any]:
    """Per-task accuracy/stderr, their mean over tasks (stderr of the mean of independent tasks) and,
    with ``top1``/``owners``, routing accuracy (top-1 == the query's own adapter)."""
    per_task = {t: {"accuracy": r.accuracy, "stderr": r.accuracy_stderr, "n": r.n} for t, r in results.items()}
    k = len(per_task)
    row: dict[str, Any] = {
        "per_task": per_task,
        "mean": sum(v["accuracy"] for v in per_task.values()) / k,
        "mean_stderr": math.sqrt(sum(v["stderr"] ** 2 for v in per_task.values())) / k,
    }
    if top1 is not None and owners is not None:
        hits = sum(int((top1[t] == owners[t]).sum()) for t in results if t in owners)
        total = sum(int(top1[t].numel()) for t in results if t in owners)
        row["routing_accuracy"] = hits / total if total else float("nan")
    return row


def paired_difference(a: Mapping[str, Any], b: Mapping[str, Any], bed: Bed, split: str) -> dict[str, float]:
    """Mean over tasks of accuracy(a) - accuracy(b) and its paired standard error (same queries in both:
    the per-query differences' variance, so shared difficulty cancels)."""
    diffs, var = [], 0.0
    for task in a:
        labels = torch.tensor(held_out_stream([task], split, bed.per_task)[task].label_ids(split))
        d = (torch.tensor(a[task].predictions) == labels).float() - (torch.tensor(b[task].predictions) == labels).float()
        diffs.append(float(d.mean()))
        var += float(d.var(unbiased=True)) / d.numel() if d.numel() > 1 else 0.0
    k = len(diffs)
    return {"diff": sum(diffs) / k, "se": math.sqrt(var) / k}


def _best_merge(path: Path) -> dict[str, Any] | None:
    """The all-task merge with the highest normalised accuracy in ``docs/merge_quality.json``."""
    if not path.is_file():
        return None
    rows = json.loads(path.read_text(encoding="utf-8")).get("rows", {}).get("all tasks", [])
    if not rows:
        return None
    best = max(rows, key=lambda r: r["normalised"])
    acc = best["accuracy"]
    return {"label": best["label"], "weights": best["weights"], "k": best["k"], "per_task": acc,
            "mean": sum(acc.values()) / len(acc), "note": "full test split, from docs/merge_quality.json"}


def _confusion(names: Sequence[str], top1: Mapping[str, torch.Tensor]) -> list[list[int]]:
    m = [[0] * len(names) for _ in names]
    for i, task in enumerate(names):
        for j in top1[task].tolist():
            m[i][j] += 1
    return m


def _route_all(bed: Bed, split: str, fn: Callable[[torch.Tensor], torch.Tensor]) -> dict[str, torch.Tensor]:
    return {t: fn(bed.base_embeddings(split, t)) for t in bed.names}


def _choose_hedge(bed: Bed, progress: ProgressFn) -> dict[str, Any]:
    """Pick the hedged router's posterior mass on the validation stream (the report is on test)."""
    split = "validation"
    probs = _route_all(bed, split, bed.learned.probabilities)
    grid = []
    for mass in HEDGE_MASSES:
        res = bed.evaluate(split, {t: nucleus_weights(p, mass) for t, p in probs.items()})
        grid.append({"mass": mass, "validation_mean": summarise(res)["mean"]})
        progress(f"hedge mass {mass:g} on validation: {grid[-1]['validation_mean']:.3f}")
    best = max(grid, key=lambda g: g["validation_mean"])
    boosts = []
    for boost in BOOSTS:
        res = bed.evaluate(split, {t: boosted_weights(p, boost) for t, p in probs.items()})
        boosts.append({"boost": boost, "validation_mean": summarise(res)["mean"]})
        progress(f"boost {boost:g} on validation: {boosts[-1]['validation_mean']:.3f}")
    best_boost = max(boosts, key=lambda g: g["validation_mean"])
    return {"mass": best["mass"], "grid": grid, "boost": best_boost["boost"], "boost_grid": boosts}


def _correct(result: Any, bed: Bed, split: str, task: str) -> torch.Tensor:
    labels = held_out_stream([task], split, bed.per_task)[task].label_ids(split)
    return torch.tensor(result.predictions) == torch.tensor(labels)


def run_route_quality(
    *, quick: bool = False, library: str | Path | None = None, per_task: int | None = None,
    threads: int | None = None, progress: ProgressFn | None = None, merge_quality_json: str | Path | None = None,
) -> dict[str, Any]:
    """Run every setting; returns the report dict (see the module docstring).

    Args:
        quick: 20 queries per task and the unseen study on two tasks (a smoke run, about a minute).
        library: task adapter folder (default ``examples/``).
        per_task: queries per task (default 150; 20 with ``quick``).
        threads: torch threads for the run.
        progress: called with one line per finished step.
        merge_quality_json: where to read the best single merge (default ``docs/merge_quality.json``).
    """
    say = progress or (lambda _m: None)
    started = time.perf_counter()
    n_per = per_task or (20 if quick else 150)
    with torch_threads(threads):
        bed = Bed(library, n_per, say)
        say(f"bed ready: {len(bed.names)} adapters, {n_per} queries per task")
        report: dict[str, Any] = {"adapters": bed.names, "per_task_queries": n_per, "split": "test"}
        report["hedge"] = _choose_hedge(bed, say)
        report["text_only"] = _text_only(bed, report["hedge"], say)
        report["label_set"] = _label_set(bed, report["text_only"], say)
        unseen = list(bed.names[:2] if quick else bed.names) + list(UNSEEN_EXTRA_TASKS)
        report["unseen"] = _unseen(bed, unseen, say)
    report["best_merge"] = _best_merge(Path(merge_quality_json) if merge_quality_json
                                       else Path(__file__).resolve().parents[2] / "docs" / "merge_quality.json")
    report["seconds"] = round(time.perf_counter() - started, 1)
    report["threads"] = threads
    return report


def _text_only(bed: Bed, hedge: Mapping[str, Any], say: ProgressFn) -> dict[str, Any]:
    split, n = "test", len(bed.names)
    owners = {t: i for i, t in enumerate(bed.names)}
    size = {t: bed.base_embeddings(split, t).shape[0] for t in bed.names}
    rows: dict[str, Any] = {}

    def static(w: torch.Tensor | None) -> dict[str, torch.Tensor | None]:
        return {t: (None if w is None else w.expand(size[t], n).clone()) for t in bed.names}

    rows["zero-shot"] = summarise(bed.evaluate(split, static(None)))
    oracle = {t: torch.nn.functional.one_hot(torch.full((size[t],), owners[t]), n).float() for t in bed.names}
    oracle_res = bed.evaluate(split, oracle)
    rows["oracle (own adapter)"] = summarise(oracle_res)
    rows["oracle (own adapter)"]["predictions"] = {t: list(r.predictions) for t, r in oracle_res.items()}
    uni_res = bed.evaluate(split, static(torch.full((n,), 1 / math.sqrt(n))))
    rows["uniform 1/sqrt(n)"] = summarise(uni_res)
    rows["uniform 1/n"] = summarise(bed.evaluate(split, static(torch.full((n,), 1 / n))))
    say("baselines done")
    confusion = {}
    routers = {
        "prototype": (bed.prototype.route, PROTOTYPE_TEMPERATURE, bed.prototype.scores),
        "learned": (bed.learned.route, LEARNED_TEMPERATURE, bed.learned.logits),
    }
    for name, (route, temp, scores) in routers.items():
        top1 = {t: s.argmax(dim=1) for t, s in _route_all(bed, split, scores).items()}
        confusion[name] = _confusion(bed.names, top1)
        for k in (1, 3):
            w = _route_all(bed, split, lambda e, k=k: route(e, top_k=k, temperature=temp))  # noqa: B023
            label = f"{name} top-{k}" + (f" (T={temp:g})" if k > 1 else "")
            res = bed.evaluate(split, w)
            rows[label] = summarise(res, owners, top1)
            rows[label]["vs_uniform"] = paired_difference(res, uni_res, bed, split)
            say(f"{label}: {rows[label]['mean']:.3f}")
    for k in (1, 3):
        label = f"arrow top-{k} (T={ARROW_TEMPERATURE:g}, per token)"
        rows[label], arrow_top1, arrow_res = _arrow(bed, split, k)
        rows[label]["vs_uniform"] = paired_difference(arrow_res, uni_res, bed, split)
        if k == 3:
            confusion["arrow"] = _confusion(bed.names, arrow_top1)
        say(f"{label}: {rows[label]['mean']:.3f}")
    probs = _route_all(bed, split, bed.learned.probabilities)
    top1 = {t: p.argmax(dim=1) for t, p in probs.items()}
    label = f"hedged learned (smallest set with posterior mass >= {hedge['mass']:g}, 1/sqrt(m) each)"
    w = {t: nucleus_weights(p, hedge["mass"]) for t, p in probs.items()}
    res = bed.evaluate(split, w)
    rows[label] = summarise(res, owners, top1)
    rows[label]["vs_uniform"] = paired_difference(res, uni_res, bed, split)
    sizes = torch.cat([(x > 0).sum(dim=1) for x in w.values()])
    rows[label]["set_sizes"] = {int(k): int((sizes == k).sum()) for k in sizes.unique()}
    say(f"{label}: {rows[label]['mean']:.3f}")
    label = f"boosted learned (uniform 1/sqrt(n) + {hedge['boost']:g} on the top-1)"
    w = {t: boosted_weights(p, hedge["boost"]) for t, p in probs.items()}
    res = bed.evaluate(split, w)
    rows[label] = summarise(res, owners, top1)
    rows[label]["vs_uniform"] = paired_difference(res, uni_res, bed, split)
    say(f"{label}: {rows[label]['mean']:.3f}")
    return {"rows": rows, "confusion": confusion}


def _arrow_task(
    bed: Bed, split: str, task: str, names: Sequence[str], top_k: int, summary: bool
) -> tuple[_Result, torch.Tensor | None]:
    """Arrow in the similarity protocol on one task: texts and label descriptions embedded with Arrow
    attached over the ``names`` adapters, each text routing itself per token and layer.

    With ``summary``, also the argmax of each query's Arrow weights averaged over layers and tokens
    (``arrow_weights_summary``), the closest per-query notion of "the adapter Arrow picked".
    """
    from adapterhub.eval.evaluate import score, similarity_predictions
    from adapterhub.route.arrow import arrow_attached, arrow_prototypes, arrow_weights_summary

    if bed.arrow_protos is None:
        bed.arrow_protos = [arrow_prototypes(a) for a in bed.adapters]
    idx = [bed.names.index(n) for n in names]
    adapters, protos = [bed.adapters[i] for i in idx], [bed.arrow_protos[i] for i in idx]
    sub = held_out_stream([task], split, bed.per_task)[task]
    texts = sub.texts(split)
    with arrow_attached(bed.model.model, adapters, protos, top_k=top_k, temperature=ARROW_TEMPERATURE):
        preds = similarity_predictions(bed.model.encode(texts), bed.model.encode(sub.label_descriptions))
    pred_list = [int(p) for p in preds]
    s = score(pred_list, sub.label_ids(split), sub.label_names)
    result = _Result(task, len(pred_list), s["accuracy"], s["accuracy_stderr"], tuple(pred_list))
    top1 = None
    if summary:
        top1 = arrow_weights_summary(bed.model, adapters, texts, protos, top_k=top_k,
                                     temperature=ARROW_TEMPERATURE).argmax(dim=1)
    return result, top1


def _arrow(bed: Bed, split: str, top_k: int) -> tuple[dict[str, Any], dict[str, torch.Tensor], dict[str, Any]]:
    """Arrow over the whole library on every task of the stream (routing accuracy for top-3 only)."""
    results, top1 = {}, {}
    for task in bed.names:
        results[task], t1 = _arrow_task(bed, split, task, bed.names, top_k, summary=top_k == 3)
        if t1 is not None:
            top1[task] = t1
    owners = {t: i for i, t in enumerate(bed.names)}
    return summarise(results, owners if top1 else None, top1 or None), top1, results


@dataclass(frozen=True)
class _Result:
    """The few ``EvalResult`` fields ``summarise`` reads, for paths that score without ``evaluate``."""

    task: str
    n: int
    accuracy: float
    accuracy_stderr: float
    predictions: tuple[int, ...]


def _label_set(bed: Bed, text_only: Mapping[str, Any], say: ProgressFn) -> dict[str, Any]:
    """Setting (b): route by the candidate label set; compare predictions with the oracle's, query by query."""
    split = "test"
    inventory = {n: bed.label_names[n] for n in bed.names}
    weights = {}
    for t in bed.names:
        labels = load_task(t).label_names
        weights[t] = label_set_weights([labels] * bed.base_embeddings(split, t).shape[0], inventory)
    res = bed.evaluate(split, weights)
    oracle_preds = text_only["rows"]["oracle (own adapter)"]["predictions"]
    identical = all(list(r.predictions) == oracle_preds[t] for t, r in res.items())
    row = summarise(res, {t: i for i, t in enumerate(bed.names)},
                    {t: w.argmax(dim=1) for t, w in weights.items()})
    row["identical_to_oracle"] = identical
    say(f"label-set routing: {row['mean']:.3f}, identical to oracle: {identical}")
    return row


def _unseen(bed: Bed, tasks: Sequence[str], say: ProgressFn) -> dict[str, Any]:
    """Each task routed over the adapters of the other tasks (prototype top-3/top-1, Arrow top-3; uniform;
    zero-shot)."""
    from adapterhub.route.prototype import PrototypeRouter

    split, out = "test", {}
    for task in tasks:
        rest = [n for n in bed.names if n != task]
        router = PrototypeRouter({n: bed.prototype.prototypes[n] for n in rest})
        emb = bed.base_embeddings(split, task)
        q = emb.shape[0]
        settings = {
            "zero-shot": (None, None),
            "uniform 1/sqrt(n) of the rest": (torch.full((q, len(rest)), 1 / math.sqrt(len(rest))), rest),
            f"prototype top-3 (T={PROTOTYPE_TEMPERATURE:g})": (router.route(emb, 3, PROTOTYPE_TEMPERATURE), rest),
            "prototype top-1": (router.route(emb, 1, 1.0), rest),
        }
        row = {}
        for label, (w, names) in settings.items():
            r = bed.evaluate(split, {task: w}, names)[task]
            row[label] = {"accuracy": r.accuracy, "stderr": r.accuracy_stderr, "n": r.n}
        r, _ = _arrow_task(bed, split, task, rest, 3, summary=False)
        row[f"arrow top-3 (T={ARROW_TEMPERATURE:g}, per token)"] = {
            "accuracy": r.accuracy, "stderr": r.accuracy_stderr, "n": r.n}
        top = router.scores(emb).argmax(dim=1)
        row["routed_to"] = {rest[i]: int((top == i).sum()) for i in range(len(rest)) if int((top == i).sum())}
        out[task] = row
        say(f"unseen {task}: " + ", ".join(f"{k} {v['accuracy']:.3f}" for k, v in row.items() if k != "routed_to"))
    return out
