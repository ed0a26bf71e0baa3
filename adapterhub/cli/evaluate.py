"""Evaluation commands: ``train``, ``eval``, ``quality`` (the merge-quality table) and ``demo``.

Each is a thin client of the facade (an ``AdapterHub`` method, or ``adapterhub.app.run_demo`` /
``merge_quality``); models and tasks load inside it, so ``adapterhub list`` never imports torch
because these commands exist.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import typer

from adapterhub.cli.catalog import JSON_OPTION, open_hub
from adapterhub.cli.lazy import command_app
from adapterhub.cli.output import handle_errors, info, print_json, print_table

THREADS_OPTION = typer.Option(
    None, "--threads", min=1, metavar="INTEGER",
    help="Torch threads (default: torch's own choice; set it on a shared machine).",
)


def _pct(value: float | None) -> str:
    return "" if value is None else f"{100 * value:.1f}"


def _num(value: float | None, digits: int = 3) -> str:
    return "" if value is None or value != value else f"{value:.{digits}f}"


def train(
    task: str = typer.Option(
        ..., "--task", metavar="TEXT", help="A shipped task (e.g. wn_pos); an unknown name lists them."
    ),
    name: str = typer.Option(
        ..., "--name", "-n", metavar="NAME", help="Catalog name of the new adapter, 'namespace/name'."
    ),
    rank: int = typer.Option(8, "--rank", min=1, metavar="INTEGER", help="LoRA rank (MoS: of each layer's export)."),
    alpha: float = typer.Option(16.0, "--alpha", min=0.0, metavar="FLOAT", help="LoRA alpha (scale alpha/rank)."),
    epochs: Optional[int] = typer.Option(
        None, "--epochs", min=1, metavar="INTEGER", help="Passes over the train split (default: 3 minilm, 2 smollm2)."
    ),
    lr: float = typer.Option(1e-3, "--lr", min=0.0, metavar="FLOAT", help="AdamW learning rate."),
    batch_size: Optional[int] = typer.Option(
        None, "--batch-size", min=1, metavar="INTEGER", help="Examples per step (default: 32 minilm, 8 smollm2)."
    ),
    steps: Optional[int] = typer.Option(
        None, "--steps", min=1, metavar="INTEGER", help="Stop after this many steps (default: all; 100 on smollm2)."
    ),
    base: str = typer.Option(
        "minilm", "--base", metavar="TEXT",
        help="minilm (sentence encoder) or smollm2 (SmolLM2-135M-Instruct causal LM, instruction prompts).",
    ),
    limit: Optional[int] = typer.Option(
        None, "--limit", min=1, metavar="INTEGER",
        help="smollm2: score on a fixed seeded subset of this many test examples (default: the whole split).",
    ),
    seed: int = typer.Option(
        0, "--seed", metavar="INTEGER", help="Seed of the init, the data order and dropout (mos: and the shard index)."
    ),
    protocol: str = typer.Option(
        "similarity", "--protocol", metavar="TEXT", help="similarity (no head) or head (joint linear head)."
    ),
    base_model: Optional[str] = typer.Option(
        None, "--base-model", metavar="FOLDER",
        help="Local transformers checkpoint folder (default: the packaged all-MiniLM-L6-v2).",
    ),
    tag: list[str] = typer.Option([], "--tag", metavar="TEXT", help="Tag recorded on the adapter; repeatable."),
    transfer_kit: bool = typer.Option(
        True, "--transfer-kit/--no-transfer-kit",
        help="Also keep seeds + a discriminator for a later `adapterhub transfer` (packaged encoder bases; ~30 s).",
    ),
    method: str = typer.Option(
        "lora", "--method", metavar="TEXT",
        help="lora, or mos (Mixture of Shards, ICLR 2025: layers share pools of shards picked by a fixed random "
             "index, not a learned router; stored as a plain rank --rank LoRA plus its pool form).",
    ),
    budget_rank: Optional[int] = typer.Option(
        None, "--budget-rank", metavar="INTEGER",
        help="mos: trains as many parameters as a LoRA of this rank (default 2).",
    ),
    shards_per_vector: Optional[int] = typer.Option(
        None, "--shards-per-vector", metavar="INTEGER",
        help="mos: shards per rank vector; must divide every adapted layer's sizes (default 2).",
    ),
    private_rank: Optional[int] = typer.Option(
        None, "--private-rank", metavar="INTEGER", help="mos: rank vectors of each layer's own, not shared (default 1)."
    ),
    threads: Optional[int] = THREADS_OPTION,
    json_output: bool = JSON_OPTION,
) -> None:
    """Train a LoRA (or a MoS adapter) for a shipped task and add it to the catalog.

    Trains on the default base model (or --base-model). The adapter is stored with its task, label
    descriptions and metrics: validation and test accuracy, macro-F1 and the zero-shot baseline on
    the same test split. A rank-8 adapter takes one to four minutes on two CPU cores.

    --method mos trains a MoS adapter (Wang et al., ICLR 2025, as its official code): each layer's
    rank vectors are shards drawn from pools shared across layers by a fixed random index (the seed),
    not a learned router, so it trains as many parameters as a LoRA of --budget-rank. The catalog
    entry is its export, a plain rank --rank PEFT LoRA any PEFT or vLLM user loads; the pool form
    is kept beside it (see `show`).

    \b
    Example:
        adapterhub train --task wn_pos --rank 8 --name acme/wn-pos
        adapterhub train --base smollm2 --task wn_antonym --name acme/antonym-smol
        adapterhub train --task wn_pos --method mos --budget-rank 2 --rank 8 --name acme/wn-pos-mos
    """
    with handle_errors():
        # the facade reports "training ..." through `progress` once the task, name and protocol
        # are valid, so a bad --task fails before any progress line is printed
        result = open_hub().train(
            task, name=name, rank=rank, alpha=alpha, epochs=epochs, lr=lr, batch_size=batch_size, seed=seed,
            protocol=protocol, base_model=base_model, base=base, max_steps=steps, limit=limit, tags=tag,
            threads=threads, progress=None if json_output else info, method=method, budget_rank=budget_rank,
            shards_per_vector=shards_per_vector, private_rank=private_rank,
            transfer_kit=transfer_kit and base_model is None,
        )
    if json_output:
        print_json(result)
        return
    test, val = result["metrics"]["test"], result["metrics"]["validation"]
    print_table(
        f"{result['adapter']['name']} ({result['task']}, {result['protocol']} protocol)",
        ["split", "accuracy", "macro-F1", "zero-shot accuracy"],
        [
            ["validation", _pct(val.get("accuracy")), _pct(val.get("macro_f1")), ""],
            ["test", _pct(test["accuracy"]), _pct(test["macro_f1"]), _pct(test["zero_shot_accuracy"])],
        ],
    )
    mos = result.get("mos")
    if mos:
        info(f"MoS: {mos['parameters']} trained parameters (a rank-{mos['budget_rank']} LoRA has "
             f"{mos['lora_budget_parameters']}, rank {mos['rank']} {mos['lora_rank_parameters']}); stored as a plain "
             f"rank-{mos['rank']} LoRA, pool form kept as {mos['form']} {mos['digest'][:12]} ({mos['bytes']} bytes)")
    info(f"added {result['adapter']['name']} ({result['metrics']['train'].get('seconds', 0):.0f} s of training)")


def eval_(
    name: str = typer.Argument(..., metavar="NAME", help="Catalog name, 'namespace/name'."),
    task: Optional[str] = typer.Option(
        None, "--task", metavar="TEXT", help="Score on this task only (default: its task, or each parent's)."
    ),
    protocol: str = typer.Option(
        "similarity", "--protocol", metavar="TEXT", help="similarity (label descriptions) or head (task head)."
    ),
    split: str = typer.Option("test", "--split", metavar="TEXT", help="test or validation."),
    limit: Optional[int] = typer.Option(
        None, "--limit", min=1, metavar="INTEGER",
        help="On a causal-LM base: a fixed seeded subset of this many examples per task.",
    ),
    record: bool = typer.Option(True, "--record/--no-record", help="Store the results as metrics on the adapter."),
    threads: Optional[int] = THREADS_OPTION,
    json_output: bool = JSON_OPTION,
) -> None:
    """Score an adapter on the test split of its task(s).

    Reports accuracy and macro-F1 on the held-out split. A merged adapter is scored on each
    parent's task, beside the zero-shot baseline and the parent's own accuracy: normalised accuracy
    (merged / own) and retained gain ((merged - zero-shot) / (own - zero-shot)). Results are
    recorded as metrics (see `show`).

    \b
    Example:
        adapterhub eval acme/merged --json
        adapterhub eval library/wn-pos --protocol head
    """
    with handle_errors():
        result = open_hub().evaluate_adapter(name, task=task, protocol=protocol, split=split, record=record,
                                             threads=threads, limit=limit)
    if json_output:
        print_json(result)
        return
    rows = []
    for r in result["tasks"]:
        rows.append([
            r["task"], r["parent"] or "", r["n"], _pct(r["accuracy"]), _pct(r["accuracy_stderr"]), _pct(r["macro_f1"]),
            _pct(r["zero_shot_accuracy"]), _pct(r.get("own_accuracy")), _num(r.get("normalised_accuracy")),
            _num(r.get("retained_gain"), 2),
        ])
    mean = result["mean"]
    if len(rows) > 1:
        rows.append(["mean", "", "", _pct(mean.get("accuracy")), "", _pct(mean.get("macro_f1")),
                     _pct(mean.get("zero_shot_accuracy")), "", _num(mean.get("normalised_accuracy")),
                     _num(mean.get("retained_gain"), 2)])
    print_table(
        f"{name} on {result['split']} ({result['protocol']} protocol)",
        ["task", "parent", "n", "accuracy %", "± %", "macro-F1 %", "zero-shot %", "own %", "normalised",
         "retained gain"],
        rows,
    )


def _quality_rows(data: dict[str, Any]) -> list[list[Any]]:
    rows = []
    for group in data["groups"]:
        g = group["name"]
        for label, ref in data["reference_rows"][g].items():
            rows.append([g, label, "", "", "", _num(ref["normalised"]), "", _num(ref["retained_gain"], 2)])
        for r in data["rows"][g]:
            rows.append([g, r["label"], r["weights"], r["k"] if r["k"] is not None else "exact", r["rank"],
                         _num(r["normalised"]), _num(r["se"]), _num(r["retained_gain"], 2)])
    return rows


def quality(
    quick: bool = typer.Option(False, "--quick", help="A few minutes: all-task merge, k=8, one seed, core methods."),
    out: Optional[Path] = typer.Option(
        Path("docs"), "--out", metavar="FOLDER", help="Folder for merge_quality.md/.json/.png."
    ),
    library: Optional[Path] = typer.Option(
        None, "--library", metavar="FOLDER", help="Folder of task adapters (default: examples/)."
    ),
    seed: list[int] = typer.Option(
        [], "--seed", metavar="INTEGER", help="Seeds of the all-task merge (repeatable; default 0 1 2)."
    ),
    k: list[int] = typer.Option([], "--k", metavar="INTEGER", help="Merge ranks (repeatable; default 4 8 16)."),
    max_examples: Optional[int] = typer.Option(
        None, "--max-examples", min=1, metavar="INTEGER", help="Cap per task (stratified)."
    ),
    base: str = typer.Option(
        "minilm", "--base", metavar="TEXT",
        help="minilm (examples/) or smollm2 (examples/smollm2: all tasks, k 8 and 16, 60 examples a task).",
    ),
    threads: Optional[int] = THREADS_OPTION,
    json_output: bool = JSON_OPTION,
) -> None:
    """Build the merge-quality table of every merge method.

    Every merge method at k = 4, 8, 16 on 2, 4 and all tasks: each merged adapter is scored on
    each of its tasks (test split) beside the zero-shot baseline and the individual adapters;
    seeds and standard errors for the all-task merge; LoRA-LEGO is compared with the best baseline
    at equal rank. Writes Markdown, JSON and a PNG plot. The full table takes about half an hour
    on two cores; --quick a few minutes.

    \b
    Example:
        adapterhub quality --quick --out /tmp/quality
        adapterhub quality --out docs/ --threads 2
    """
    with handle_errors():
        # the facade imports SQLAlchemy (and the evaluation bed on use): load it when this runs
        from adapterhub.app import merge_quality

        data = merge_quality(
            quick=quick, out=out, library=library, seeds=seed or None, ks=k or None, max_examples=max_examples,
            threads=threads, progress=None if json_output else info, base=base,
            stem="merge_quality" if base == "minilm" else f"merge_quality_{base}",
        )
    if json_output:
        print_json(data)
        return
    print_table("merge quality (mean normalised accuracy; ± one SE)",
                ["group", "merge", "weights", "k", "rank", "norm. acc.", "±", "retained gain"], _quality_rows(data))
    verdicts = data["lego_vs_best_baseline"]
    if verdicts:
        print_table("LoRA-LEGO vs the best baseline at equal k",
                    ["group", "k", "lego", "best baseline", "its score", "difference", "SE", "verdict"],
                    [[v["group"], v["k"], _num(v["lego"]), v["best_label"], _num(v["baseline"]),
                      f"{v['delta']:+.3f}", _num(v["se"]), v["verdict"]] for v in verdicts])
    for kind, path in data["files"].items():
        info(f"wrote {kind}: {path}")


def demo(
    home: Optional[Path] = typer.Option(
        None, "--home", metavar="FOLDER", help="The demo's catalog folder (default ./demo-home)."
    ),
    library: Optional[Path] = typer.Option(
        None, "--library", metavar="FOLDER", help="Folder of task adapters (default: examples/)."
    ),
    out: Optional[Path] = typer.Option(
        None, "--out", metavar="FOLDER", help="Folder for demo.md and demo.png (default <home>/report)."
    ),
    quick: bool = typer.Option(False, "--quick", help="Three tasks, two merges: a smoke test."),
    threads: Optional[int] = THREADS_OPTION,
    json_output: bool = JSON_OPTION,
) -> None:
    """Merge the shipped task adapters and score every merge; route unlabeled queries among them.

    On a fresh embedded catalog (--home, default ./demo-home): imports every task adapter of the
    library, merges all of them into one rank-8 adapter with LoRA-LEGO and with each baseline
    method, scores each merge on every task's test split beside zero-shot and the individual
    adapters, and writes a table and a plot. Then routes a mixed stream of test queries without
    their task name (prototype router) and scores the routed mixtures beside each own adapter.
    Then three SmolLM2-135M (causal LM) task adapters merged and scored on a small test subset.
    Then the library packed into shared shard pools (and scored), and one MoS adapter trained.
    Last, one library adapter moved to all-mpnet-base-v2 without its data (Trans-LoRA).
    About 2.5 minutes on 2 cores (the first run also dequantises SmolLM2 and unzips MPNet once, ~30 s);
    --quick about 1.5 minutes.

    \b
    Example:
        adapterhub demo
        adapterhub demo --home /tmp/demo --quick
    """
    with handle_errors():
        # the facade imports SQLAlchemy (and the evaluation bed on use): load it when this runs
        from adapterhub.app import run_demo

        data = run_demo(home=home, library=library, out=out, quick=quick, threads=threads,
                        progress=None if json_output else info)
    if json_output:
        print_json(data)
        return
    tasks = data["tasks"]
    refs = data["references"]
    zero_norm = sum(refs[t]["zero_shot"] / refs[t]["own"] for t in tasks) / len(tasks)
    summary = [
        ["zero-shot (base model)", "", "", "", _num(zero_norm), "0.00"],
        ["individual adapters", "", "", "", "1.000", "1.00"],
    ]
    for r in data["rows"]:
        summary.append([r["label"], r["weights"], r["k"] if r["k"] is not None else "exact", r["rank"],
                        _num(r["normalised_accuracy"]), _num(r["retained_gain"], 2)])
    print_table(f"one merged adapter for {len(tasks)} tasks: mean over tasks (test split)",
                ["merge", "weights", "k", "rank", "norm. acc.", "retained gain"], summary)
    slugs = [r["name"].split("/", 1)[1] for r in data["rows"]]
    per_task = [[t, _pct(refs[t]["zero_shot"]), _pct(refs[t]["own"]), *[_pct(r["accuracy"][t]) for r in data["rows"]]]
                for t in tasks]
    print_table("test accuracy % per task", ["task", "zero-shot", "own", *slugs], per_task)
    routing = data["routing"]
    route_rows = [[t, _pct(r["oracle"]), _pct(r["top1"]), _pct(r["hedged"]), _pct(r["routed_to_own"])]
                  for t, r in routing["tasks"].items()]
    m = routing["mean"]
    route_rows.append(["mean", _pct(m["oracle"]), _pct(m["top1"]), _pct(m["hedged"]), _pct(m["routed_to_own"])])
    print_table(f"routing {routing['per_task']} unlabeled test queries per task (no task name; docs/routing.md)",
                ["task", "own adapter", "prototype top-1", "hedged mixture", "own adapter picked"], route_rows)
    _print_generative(data["generative"])
    _print_shard(data["shard"])
    _print_transfer(data["transfer"])
    info(f"catalog: {data['home']}  ({data['seconds']:.0f} s)")
    for kind, path in data["files"].items():
        info(f"wrote {kind}: {path}")


def _print_generative(section: dict[str, Any]) -> None:
    """The demo's causal-LM row: SmolLM2 adapters merged, on a small test subset (said in the title)."""
    if "skipped" in section:
        info(f"SmolLM2 section skipped: {section['skipped']}")
        return
    rows = [[t, _pct(r["zero_shot"]), _pct(r["own"]), _pct(r["merged"])] for t, r in section["tasks"].items()]
    m = section["mean"]
    rows.append(["mean", _pct(m["zero_shot"]), _pct(m["own"]), _pct(m["merged"])])
    print_table(f"SmolLM2-135M (causal LM): {len(section['tasks'])} task adapters merged by LoRA-LEGO k=8; accuracy % "
                f"on a fixed subset of {section['per_task']} test examples per task (small, to keep the demo short)",
                ["task", "zero-shot", "own adapter", "merged"], rows)


def _print_shard(section: dict[str, Any]) -> None:
    """The demo's shard section: the library packed into shared pools (accuracy before and after), one MoS adapter."""
    pack, mos = section["pack"], section["mos"]
    rows = [[n, _pct(r["original"]), _pct(r["packed"])] for n, r in pack["adapters"].items()]
    s = pack["stats"]
    print_table(f"shard pools: {len(rows)} adapters packed in {pack['seconds']:.0f} s, {s['bytes_unpacked']:,} -> "
                f"{s['bytes_packed']:,} bytes ({s['ratio']:.1f}x); test accuracy % (docs/shard_pools.md)",
                ["adapter", "original", "packed"], rows)
    info(f"MoS on {mos['task']} ({mos['steps']} steps): accuracy {_pct(mos['accuracy'])}% (zero-shot "
         f"{_pct(mos['zero_shot'])}%) with {mos['parameters']:,} trainable parameters; a rank-8 LoRA has "
         f"{mos['lora_rank_parameters']:,}")


def _print_transfer(section: dict[str, Any]) -> None:
    """The demo's transfer row: one adapter moved to MPNet, beside its source and MPNet zero-shot."""
    if "skipped" in section:
        info(f"transfer section skipped: {section['skipped']}")
        return
    print_table(f"Trans-LoRA: {section['source']} (MiniLM) -> {section['target']} (all-mpnet-base-v2), "
                f"{section['accepted']} of {section['generated']} SmolLM2 samples kept by the discriminator; "
                "test accuracy % (small, to keep the demo short; docs/transfer.md)",
                ["task", "source (MiniLM + LoRA)", "MPNet zero-shot", "MPNet + transferred LoRA"],
                [[section["task"], _pct(section["source_accuracy"]), _pct(section["zero_shot"]),
                  _pct(section["accuracy"])]])


def typer_app() -> typer.Typer:
    """The evaluation commands (the root group calls this when one of them is first used)."""
    app = command_app()
    app.command("train")(train)
    app.command("eval")(eval_)
    app.command("quality")(quality)
    app.command("demo")(demo)
    return app
