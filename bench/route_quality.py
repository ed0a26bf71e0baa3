"""Routing quality on the shipped bed (issue 10): writes docs/routing.md, docs/routing.json, docs/routing.png.

Runs ``adapterhub.app.route_quality.run_route_quality``: a held-out stream of 150 test queries per
shipped task, routed from the text alone by the prototype, learned, hedged and Arrow routers and
scored with each query's own labels; beside the oracle, uniform mixtures, zero-shot and the best
all-task merge; the label-set check; and each task routed over the other adapters (unseen tasks).

Use ONE torch thread unless the machine is idle: on a shared 2-core machine two threads that
contend with other processes ran 10x slower than one.
    nohup .venv/bin/python bench/route_quality.py > /tmp/route_quality.log 2>&1 &
    .venv/bin/python bench/route_quality.py --quick --out /tmp/rq      # smoke run, 20 queries per task
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

SHORT = {"wn_noun_supersense": "noun_ss", "wn_verb_supersense": "verb_ss", "wn_pos": "pos",
         "wn_adj_kind": "adj_kind", "wn_animal_class": "animal", "chat_topic": "chat_topic",
         "chat_language": "chat_lang", "wn_topic_domain": "topic_domain"}


def _pct(x: float) -> str:
    return f"{100 * x:.1f}"


def render_markdown(r: Mapping[str, Any]) -> str:
    """docs/routing.md from the report dict (every number in it comes from ``r``)."""
    names = r["adapters"]
    rows = r["text_only"]["rows"]
    out = ["# Routing quality", ""]
    out.append(
        f"Bed: MiniLM (all-MiniLM-L6-v2), the {len(names)} shipped task adapters, the label-description "
        f"(similarity) protocol. Stream: {r['per_task_queries']} queries per task drawn with a fixed seed from each "
        f"task's **test** split ({sum(v['n'] for v in rows['zero-shot']['per_task'].values())} queries); a query "
        "carries no task name and is scored with its own task's candidate labels. Routers see only the text, each "
        "adapter's 32 stored train examples (`examples/<task>/adapterhub_examples.jsonl`) and the adapters. "
        f"Settings that are chosen were chosen on a validation stream drawn the same way. {r['seconds'] / 60:.1f} min "
        f"with {r['threads']} torch thread(s). Reproduce: `.venv/bin/python bench/route_quality.py`."
    )
    out += ["", "Accuracy (%) is the mean over tasks of per-task accuracy; `SE` is its standard error (binomial, "
            "tasks independent); routing accuracy = share of queries whose top-1 adapter is their own task's.", ""]
    out += ["## (a) Text only", ""]
    head = ("| setting | accuracy | SE | vs uniform 1/sqrt(n) (paired SE) | routing acc. | "
            + " | ".join(SHORT.get(n, n) for n in names) + " |")
    out += [head, "|" + "---|" * (5 + len(names))]
    for label, row in rows.items():
        ra = row.get("routing_accuracy")
        cells = " | ".join(_pct(row["per_task"][n]["accuracy"]) for n in names)
        bold = label.startswith(("hedged", "boosted"))
        name = f"**{label}**" if bold else label
        vs = row.get("vs_uniform")
        vs_cell = "" if not vs else f"{100 * vs['diff']:+.1f} ± {_pct(vs['se'])}"
        out.append(f"| {name} | {_pct(row['mean'])} | {_pct(row['mean_stderr'])} | {vs_cell} | "
                   f"{'' if ra is None else _pct(ra)} | {cells} |")
    best = r.get("best_merge")
    if best:
        cells = " | ".join(_pct(best["per_task"][n]) for n in names)
        out.append(f"| best all-task merge: {best['label']} w={best['weights']} k={best['k']} (full test split) | "
                   f"{_pct(best['mean'])} | | | | {cells} |")
    hedge = r["hedge"]
    sizes = next((row.get("set_sizes") for k, row in rows.items() if k.startswith("hedged")), None) or {}
    grid = ", ".join(f"{g['mass']:g}: {_pct(g['validation_mean'])}" for g in hedge["grid"])
    out += ["", f"Hedged router: the smallest set of the learned router's most likely adapters whose posterior "
            f"mass reaches {hedge['mass']:g}, each at 1/sqrt(m); the mass was chosen on the validation stream "
            f"(validation mean accuracy by mass: {grid}; 0 is top-1, 1 the uniform mixture). Set sizes on test: "
            + ", ".join(f"{k} adapter(s): {v}" for k, v in sorted(sizes.items(), key=lambda kv: int(kv[0])))
            + ". Boosted router: the uniform 1/sqrt(n) mixture plus "
            f"{hedge['boost']:g} on the learned router's top-1, the boost chosen on validation ("
            + ", ".join(f"{g['boost']:g}: {_pct(g['validation_mean'])}" for g in hedge["boost_grid"]) + ").", ""]
    out += ["### Confusion of the learned router's top-1 (rows: query task, columns: routed adapter)", ""]
    conf = r["text_only"]["confusion"]["learned"]
    out += ["| task | " + " | ".join(SHORT.get(n, n) for n in names) + " |", "|" + "---|" * (1 + len(names))]
    for n, line in zip(names, conf):
        out.append(f"| {SHORT.get(n, n)} | " + " | ".join(str(c) for c in line) + " |")
    ls = r["label_set"]
    out += ["", "## (b) Text + candidate labels", "",
            f"Routing by the candidate label set (it names the task the adapter was trained on): accuracy "
            f"{_pct(ls['mean'])}, routing accuracy {_pct(ls['routing_accuracy'])}; predictions identical to the "
            f"oracle's, query by query: **{'yes' if ls['identical_to_oracle'] else 'NO'}**.", ""]
    out += ["## Unseen tasks", "", "Each task's queries routed over the adapters of the *other* tasks "
            "(`wn_topic_domain` has no shipped adapter, so all 7 are available to it).", ""]
    unseen = r["unseen"]
    cols = [k for k in next(iter(unseen.values())) if k != "routed_to"]
    out += ["| held-out task | " + " | ".join(cols) + " | most routed to |", "|" + "---|" * (2 + len(cols))]
    for task, row in unseen.items():
        top = sorted(row["routed_to"].items(), key=lambda kv: -kv[1])[:2]
        cells = " | ".join(f"{_pct(row[c]['accuracy'])} ± {_pct(row[c]['stderr'])}" for c in cols)
        out.append(f"| {task} | {cells} | " + ", ".join(f"{SHORT.get(k, k)} ({v})" for k, v in top) + " |")
    means = {c: sum(row[c]["accuracy"] for row in unseen.values()) / len(unseen) for c in cols}
    out.append("| **mean** | " + " | ".join(f"**{_pct(means[c])}**" for c in cols) + " | |")
    out += ["", "## Findings", ""] + findings(r, means)
    out += ["", "![routing](routing.png)", ""]
    return "\n".join(out)


def findings(r: Mapping[str, Any], unseen_means: Mapping[str, float]) -> list[str]:
    """The plain-language paragraph, with its numbers read from the report."""
    rows = r["text_only"]["rows"]
    get = {k.split(" (")[0]: v for k, v in rows.items()}
    oracle, uni = get["oracle"]["mean"], rows["uniform 1/sqrt(n)"]["mean"]
    best_label, best = max(((k, v) for k, v in rows.items() if not k.startswith(("oracle", "uniform", "zero"))),
                           key=lambda kv: kv[1]["mean"])
    goal = uni + (oracle - uni) / 2
    names = r["adapters"]
    conf = r["text_only"]["confusion"]["learned"]
    errors = [(i, j, c) for i, line in enumerate(conf) for j, c in enumerate(line) if i != j]
    gloss = {i for i, n in enumerate(names) if n.startswith("wn_")}
    inside = sum(c for i, j, c in errors if i in gloss and j in gloss) / max(1, sum(c for _, _, c in errors))
    vs = best.get("vs_uniform") or {"diff": float("nan"), "se": float("nan")}
    text = [
        f"- On this stream: oracle {_pct(oracle)}, uniform 1/sqrt(n) mixture {_pct(uni)}, zero-shot "
        f"{_pct(rows['zero-shot']['mean'])} (the issue's own draw of 150 per task measured 86.0 / 79.7 / 63.9: "
        f"another sample, so compare settings within one table). The best text-only router, *{best_label}*, reaches "
        f"{_pct(best['mean'])} ± {_pct(best['mean_stderr'])}, {100 * vs['diff']:+.1f} ± {_pct(vs['se'])} over the "
        f"uniform mixture on the same queries (paired). It passes the issue's absolute mark of 83 "
        f"(**{'yes' if best['mean'] >= 0.83 else 'no'}**), but the goal as the issue defines it, half the "
        f"uniform-to-oracle gap ({_pct(goal)} here), is **{'met' if best['mean'] >= goal else 'not met'}**: it "
        f"closes {100 * (best['mean'] - uni) / (oracle - uni):.0f}% of the gap.",
        "- Why text-only routing is capped on this bed: five of the seven tasks take WordNet glosses, so a noun "
        "gloss may be a noun-supersense, a part-of-speech or an animal-class query, a verb gloss a verb-supersense "
        "or a part-of-speech one, an adjective gloss an adjective-kind or a part-of-speech one; and English chat "
        f"lines occur in both chat tasks. {_pct(inside)}% of the learned router's top-1 errors stay inside the "
        "gloss block (confusion table). No router that sees only the text can tell those apart; what it can do is "
        "avoid committing to one adapter when the text is ambiguous.",
        f"- A wrong single adapter costs more than a diluted right one: learned top-1 ({_pct(rows['learned top-1']['mean'])}, "
        f"routing accuracy {_pct(rows['learned top-1']['routing_accuracy'])}) and prototype top-1 "
        f"({_pct(rows['prototype top-1']['mean'])}, {_pct(rows['prototype top-1']['routing_accuracy'])}) stay below "
        "the uniform mixture although they pick the right adapter most of the time (a misrouted part-of-speech or "
        "verb query scores far below zero-shot). Mixtures that keep other adapters in play recover most of it; "
        "only the ones that hedge on purpose beat the uniform mixture ("
        + ", ".join(f"{k.split(' (')[0]} {100 * v['vs_uniform']['diff']:+.1f} ± {_pct(v['vs_uniform']['se'])}"
                    for k, v in rows.items() if k.startswith(("hedged", "boosted")) and v.get("vs_uniform"))
        + " paired): the hedged router commits only when the learned posterior is concentrated and otherwise mixes "
        "the plausible adapters at 1/sqrt(m); the boosted one keeps the whole uniform mixture and adds weight on the "
        "likely adapter, so a misroute costs little. The learned classifier beats the centroid router on routing "
        "accuracy: it learns which directions separate look-alike tasks.",
    ]
    arrow = [(k, v) for k, v in rows.items() if k.startswith("arrow")]
    if arrow:
        text.append(
            "- Arrow (data-free, per token) lands at " + ", ".join(f"{_pct(v['mean'])} ({k})" for k, v in arrow)
            + ": its score |<x, v>| per token and layer looks at the direction each adapter's update amplifies, "
            "not at what the query is about, so on short inputs with similar token statistics (all glosses) it "
            "spreads weight across adapters rather than picking the task: the argmax of its layer- and "
            "token-averaged weights is the query's own adapter for "
            + ", ".join(f"{_pct(v['routing_accuracy'])}%" for k, v in arrow if "routing_accuracy" in v)
            + " of queries."
        )
    unseen = r["unseen"]
    cols = [c for c in unseen_means if c not in ("zero-shot", "uniform 1/sqrt(n) of the rest")]
    wins = {c: [t for t, row in unseen.items() if row[c]["accuracy"] > max(
        row["zero-shot"]["accuracy"], row["uniform 1/sqrt(n) of the rest"]["accuracy"])] for c in cols}
    text.append(
        f"- Unseen tasks (mean over {len(unseen)} held-out tasks): zero-shot {_pct(unseen_means['zero-shot'])}, "
        f"uniform merge of the rest {_pct(unseen_means['uniform 1/sqrt(n) of the rest'])}, "
        + ", ".join(f"{c} {_pct(unseen_means[c])}" for c in cols)
        + ". Routing beats both zero-shot and the uniform merge of the rest on "
        + "; ".join(f"{len(wins[c])}/{len(unseen)} tasks with {c}" + (f" ({', '.join(wins[c])})" if wins[c] else "")
                    for c in cols)
        + ", mostly within one SE. So on this bed routing does not transfer to an unseen task: the nearest "
        "adapter by input (a noun-supersense query sent to the animal-class adapter, a verb-supersense query to "
        "the part-of-speech adapter) was trained for other labels, and its update pulls the embedding towards "
        "those labels' distinctions, not the new task's."
    )
    arrow_cols = [c for c in cols if c.startswith("arrow")]
    if arrow_cols:
        a = arrow_cols[0]
        others = max(unseen_means[c] for c in cols if c != a)
        text.append(
            f"- Arrow, data-free and made for this setting, is {'the best' if unseen_means[a] > others else 'not the best'} "
            f"of the routers on unseen tasks ({_pct(unseen_means[a])} vs {_pct(others)} for the best example-based "
            f"one) and {'above' if unseen_means[a] > unseen_means['zero-shot'] else 'below'} zero-shot "
            f"({_pct(unseen_means['zero-shot'])}): mixing per token spreads the update over several adapters, "
            "which harms less than committing a query to one wrong adapter."
        )
    return text


def plot(r: Mapping[str, Any], path: Path) -> None:
    """Left: mean accuracy per setting with SE bars; right: the learned router's confusion matrix."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = r["text_only"]["rows"]
    names = r["adapters"]
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(14, 5.5), gridspec_kw={"width_ratios": [1.2, 1]})
    labels = list(rows)
    means = [100 * rows[k]["mean"] for k in labels]
    errs = [100 * rows[k]["mean_stderr"] for k in labels]
    colors = ["#2a9d4a" if k.startswith(("hedged", "boosted")) else "#888" if k.startswith(("oracle", "uniform", "zero")) else "#3b7dd8" for k in labels]
    ax.barh(range(len(labels)), means, xerr=errs, color=colors)
    ax.set_yticks(range(len(labels)), [k if len(k) < 48 else k[:45] + "..." for k in labels], fontsize=7)
    ax.invert_yaxis()
    lo = min(means) - 5
    ax.set_xlim(lo, 100)
    ax.set_xlabel("mean accuracy over tasks (%)")
    ax.set_title("Text-only routing, test stream")
    conf = r["text_only"]["confusion"]["learned"]
    bx.imshow(conf, cmap="Blues")
    short = [SHORT.get(n, n) for n in names]
    bx.set_xticks(range(len(names)), short, rotation=45, ha="right", fontsize=8)
    bx.set_yticks(range(len(names)), short, fontsize=8)
    for i, line in enumerate(conf):
        for j, c in enumerate(line):
            bx.text(j, i, str(c), ha="center", va="center", fontsize=7, color="black" if c < 80 else "white")
    bx.set_xlabel("routed adapter (learned router top-1)")
    bx.set_ylabel("query's task")
    bx.set_title("Task confusion")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="20 queries per task, unseen study on 3 tasks")
    parser.add_argument("--out", type=Path, default=ROOT / "docs", help="output folder (default docs/)")
    parser.add_argument("--library", type=Path, default=None, help="task adapters (default examples/)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1, see above)")
    parser.add_argument("--per-task", type=int, default=None, help="queries per task (default 150; quick 20)")
    parser.add_argument("--from-json", type=Path, default=None,
                        help="re-render routing.md/.png from a routing.json written earlier (no evaluation)")
    args = parser.parse_args(argv)

    started = time.perf_counter()

    def say(message: str) -> None:
        print(f"[{(time.perf_counter() - started) / 60:5.1f} min] {message}", flush=True)

    args.out.mkdir(parents=True, exist_ok=True)
    if args.from_json is not None:
        report = json.loads(args.from_json.read_text(encoding="utf-8"))
    else:
        from adapterhub.app.route_quality import run_route_quality

        report = run_route_quality(quick=args.quick, library=args.library, per_task=args.per_task,
                                   threads=args.threads, progress=say)
        for row in report["text_only"]["rows"].values():
            row.pop("predictions", None)
        text = json.dumps(report, indent=1, default=float) + "\n"
        (args.out / "routing.json").write_text(text, encoding="utf-8")
    md = render_markdown(report)
    (args.out / "routing.md").write_text(md, encoding="utf-8")
    plot(report, args.out / "routing.png")
    print(md)
    say(f"wrote {args.out / 'routing.md'}, routing.json, routing.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
