"""Issue 12 ("MoS shard pools") quality studies: one command runs both and writes the report.

Parts (each resumable: every finished unit is written to its JSON at once, and a unit already in
the JSON is not run again, so a crash or a deadline loses at most the unit in flight):

* ``--mos-minilm``  — MoS (LoRA-rank-2 budget) vs LoRA rank 2 and 8 on the 7 tasks of the shipped
  MiniLM library (``scripts/mos_quality.py``) -> ``docs/shard_pools_mos_minilm.json``;
* ``--mos-smollm2`` — the same on SmolLM2-135M, a reduced protocol -> ``docs/shard_pools_mos_smollm2.json``;
* ``--packing``     — the shipped MiniLM library packed into shared shard pools at several pool sizes and
  private budgets, against rank truncation and int8 at equal bytes (``scripts/packing_curve.py``)
  -> ``docs/shard_pools_packing.json``;
* ``--report``      — ``docs/shard_pools.md`` and ``docs/shard_pools.png`` from whatever JSON exists.

Run everything (hours on two shared cores; parts may also run as separate processes at once,
they write separate files):
    ADAPTERHUB_BASES=/work/smolhome/bases .venv/bin/python scripts/shard_study.py --all
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
sys.path.insert(0, str(ROOT))

from adapterhub.files import atomic_write  # noqa: E402


def mean_se(values: Iterable[float]) -> tuple[float, float]:
    """Mean and standard error of the mean (sample SD / sqrt(n)); SE is NaN for fewer than two values."""
    xs = [float(v) for v in values]
    if not xs:
        return math.nan, math.nan
    m = sum(xs) / len(xs)
    if len(xs) < 2:
        return m, math.nan
    var = sum((x - m) ** 2 for x in xs) / (len(xs) - 1)
    return m, math.sqrt(var / len(xs))


def binomial_se_of_mean(accs: Sequence[float], ns: Sequence[int]) -> float:
    """SE of a mean of accuracies from test-sample noise alone (independent binomials)."""
    if not accs:
        return math.nan
    return math.sqrt(sum(a * (1 - a) / n for a, n in zip(accs, ns, strict=True))) / len(accs)


class Units:
    """A JSON file of finished units (``{"meta": ..., "units": {key: record}}``), saved after each one.

    Why: the studies run for hours on shared cores; writing each unit as it finishes makes a run
    resumable (``has``) and leaves usable partial results at any moment.
    """

    def __init__(self, path: Path, meta: dict[str, Any] | None = None) -> None:
        self.path = path
        data = json.loads(path.read_text()) if path.exists() else {}
        self.meta: dict[str, Any] = data.get("meta", {})
        self.units: dict[str, dict[str, Any]] = data.get("units", {})
        if meta:
            self.meta.update(meta)

    def has(self, key: str) -> bool:
        return key in self.units

    def put(self, key: str, record: dict[str, Any]) -> None:
        self.units[key] = record
        self.save()

    def save(self) -> None:
        with atomic_write(self.path, "w") as f:
            f.write(json.dumps({"meta": self.meta, "units": self.units}, indent=1, sort_keys=True) + "\n")


def run_unit(units: Units, key: str, work: Callable[[], dict[str, Any]], log: Callable[[str], None] = print) -> dict:
    """Run ``work`` unless ``key`` is done; store its record with the seconds it took."""
    if units.has(key):
        return units.units[key]
    started = time.perf_counter()
    record = work()
    record["seconds"] = round(time.perf_counter() - started, 1)
    units.put(key, record)
    log(f"{time.strftime('%H:%M:%S')} {key}: " + json.dumps({k: v for k, v in record.items() if not isinstance(v, (dict, list))}))
    return record

# ------------------------------------------------------------------------------------------- report
METHOD_NAMES = {"zero_shot": "zero-shot", "lora_r2": "LoRA r2", "mos": "MoS (r2 budget)", "lora_r8": "LoRA r8",
                "lora_r16": "LoRA r16"}
FINDINGS_START, FINDINGS_END = "<!-- findings -->", "<!-- /findings -->"


def _fmt(m: float, se: float, scale: float = 100.0, digits: int = 1) -> str:
    if m != m:
        return "not run"
    return f"{scale * m:.{digits}f}" + ("" if se != se else f" ± {scale * se:.{digits}f}")


def _cell(per_task: tuple[float, float, int], seeds: int) -> str:
    """A task's mean ± SE, with its number of seeds when it differs from the row's."""
    m, se, n = per_task
    return _fmt(m, se) + (f" ({n} s.)" if seeds and n != seeds else "")


def _limit(n: int | None) -> str:
    return "whole split" if n is None else f"fixed seeded subset of {n}"


def mos_summary(data: dict[str, Any], only: Sequence[str] | None = None) -> dict[str, Any]:
    """Per method: its chosen rate, parameters, per-task and task-mean test accuracy over the seeds run.

    Tasks: the protocol's (they choose the rate on validation), then any other task a ``--part``
    process ran at the chosen rates; only those whose seed-0 runs all finished; ``only`` narrows them.
    Per task, every seed run counts; the task mean uses the seeds complete on every included task.
    """
    meta, units = data["meta"], data["units"]
    proto = meta["protocol"]
    seeds = proto["seeds"]
    s0 = seeds[0]
    core = [m for m in proto["lrs"] if m not in proto.get("late", [])]
    selecting = [t for t in proto["tasks"]
                 if all(f"{t}/{m}/lr{lr:g}/s{s0}" in units for m in core for lr in proto["lrs"][m])]
    out: dict[str, Any] = {"selecting_tasks": selecting, "methods": {}}
    chosen: dict[str, float] = {}
    for method, grid in proto["lrs"].items():
        val = {}
        for lr in grid:
            recs = [units.get(f"{t}/{method}/lr{lr:g}/s{s0}") for t in selecting]
            if selecting and all(recs):
                val[lr] = sum(r["validation"]["accuracy"] for r in recs) / len(recs)  # type: ignore[index]
        if val:
            chosen[method] = max(val, key=lambda k: (val[k], -k))
            out.setdefault("validation_by_lr", {})[method] = val
    extra = sorted({k.split("/")[0] for k in units if not k.endswith("/zero_shot")} - set(proto["tasks"]))
    planned = proto["tasks"] + extra
    tasks = selecting + [t for t in extra if all(m in chosen and f"{t}/{m}/lr{chosen[m]:g}/s{s0}" in units for m in core)]
    if only is not None:
        tasks = [t for t in tasks if t in only]
    out.update(tasks=tasks, planned_tasks=[t for t in planned if only is None or t in only])
    zero = {t: units[f"{t}/zero_shot"]["test"] for t in tasks if f"{t}/zero_shot" in units}
    if tasks and len(zero) == len(tasks):
        accs = [zero[t]["accuracy"] for t in tasks]
        out["methods"]["zero_shot"] = {"per_task": {t: (zero[t]["accuracy"], math.nan, 1) for t in tasks},
                                       "mean": (sum(accs) / len(accs), math.nan), "parameters": 0, "seeds": [],
                                       "binomial_se": binomial_se_of_mean(accs, [zero[t]["n"] for t in tasks]),
                                       "by_seed": {}}
    for method, lr in chosen.items():
        runs = {t: {sd: units[k] for sd in seeds if (k := f"{t}/{method}/lr{lr:g}/s{sd}") in units} for t in tasks}
        if not tasks or not all(s0 in runs[t] for t in tasks):
            continue
        full = [sd for sd in seeds if all(sd in runs[t] for t in tasks)]
        per_task = {t: (*mean_se(r["test"]["accuracy"] for r in runs[t].values()), len(runs[t])) for t in tasks}
        means = {sd: sum(runs[t][sd]["test"]["accuracy"] for t in tasks) / len(tasks) for sd in full}
        first = [runs[t][s0] for t in tasks]
        out["methods"][method] = {
            "lr": lr, "seeds": full, "per_task": per_task, "mean": mean_se(means.values()), "by_seed": means,
            "parameters": first[0]["parameters"], "validation_by_lr": out["validation_by_lr"][method],
            "binomial_se": binomial_se_of_mean([r["test"]["accuracy"] for r in first], [r["test"]["n"] for r in first]),
        }
    out["seconds"] = sum(u.get("seconds", 0) for u in units.values())
    return out


def _diff(summary: dict[str, Any], a: str, b: str) -> tuple[float, float, int]:
    """Task-mean accuracy of ``a`` minus ``b``, paired by seed; SE over seeds (binomial SE if one seed)."""
    ma, mb = summary["methods"].get(a), summary["methods"].get(b)
    if not ma or not mb:
        return math.nan, math.nan, 0
    if b == "zero_shot":
        diffs = [v - mb["mean"][0] for v in ma["by_seed"].values()]
    else:
        diffs = [ma["by_seed"][s] - mb["by_seed"][s] for s in ma["by_seed"] if s in mb["by_seed"]]
    m, se = mean_se(diffs)
    if se != se:
        se = math.hypot(ma["binomial_se"], mb["binomial_se"])
    return m, se, len(diffs)


def _verdict(m: float, se: float) -> str:
    if m != m:
        return "not run"
    return "tie (within 2 SE)" if abs(m) <= 2 * se else ("MoS better" if m > 0 else "MoS worse")


def mos_section(title: str, data: dict[str, Any], command: str, note: str, only: Sequence[str] | None = None,
                selection: bool = True) -> list[str]:
    """Markdown tables of one base's MoS study (``only``: these tasks; ``selection``: with the rate table)."""
    s = mos_summary(data, only)
    tasks, methods = s["tasks"], s["methods"]
    p = data["meta"]["protocol"]
    mos_params = methods.get("mos", {}).get("parameters") or math.nan
    lines = [f"## {title}", "", note, "", f"Reproduce: `{command}`", "",
             f"Settings: tasks {', '.join(tasks)}"
             + (f" (planned {', '.join(s['planned_tasks'])}: the others did not finish before the deadline)"
                if tasks != s["planned_tasks"] else "") + f"; at most {p['max_steps']} steps of batch {p['batch_size']} "
             f"(at most {p['epochs']} epochs), alpha {p['alpha']:g}, AdamW; seeds planned {p['seeds']}; test "
             f"{_limit(p['test_limit'])}, validation {_limit(p['validation_limit'])}; "
             f"{s['seconds'] / 60:.0f} min of work (sum of units, {data['meta'].get('threads', 1)} torch thread, shared cores).",
             "", "Accuracy (%) on the test split, mean ± SE over the seeds run (per task: seed spread only; the mean row's "
             "`binom. SE` is the test-sample noise of a task mean, which seeds do not show: same test examples).", "",
             "| method | lr | seeds | trainable params | vs MoS | mean | binom. SE | " + " | ".join(tasks) + " |",
             "|---|---|---|---|---|---|---|" + "---|" * len(tasks)]
    for key in ("zero_shot", "lora_r2", "mos", "lora_r8", "lora_r16"):
        if key not in methods:
            if key in p["lrs"]:
                lines.append(f"| {METHOD_NAMES[key]} | | not run | | | not run | |" + " |" * len(tasks))
            continue
        m = methods[key]
        ratio = "" if key == "zero_shot" else f"{m['parameters'] / mos_params:.0f}x"
        lines.append(f"| {METHOD_NAMES[key]} | {m.get('lr', '') or ''} | {len(m['seeds']) or ''} | {m['parameters']:,} | "
                     f"{ratio} | {_fmt(*m['mean'])} | {100 * m['binomial_se']:.1f} | "
                     + " | ".join(_cell(m["per_task"][t], len(m["seeds"])) for t in tasks) + " |")
    lines += ["", "MoS minus each reference (task-mean accuracy, points; paired by seed, SE over seeds; with one seed, "
              "the two binomial SEs combined). A difference within 2 SE is a tie.", "",
              "| comparison | parameter ratio | difference | SE | seeds | verdict |", "|---|---|---|---|---|---|"]
    for ref in ("lora_r2", "lora_r8", "lora_r16", "zero_shot"):
        if ref not in methods or "mos" not in methods:
            continue
        d, se, n = _diff(s, "mos", ref)
        ratio = f"{methods[ref]['parameters'] / mos_params:.0f}x" if ref != "zero_shot" else "-"
        lines.append(f"| MoS - {METHOD_NAMES[ref]} | {ratio} | {100 * d:+.1f} | {100 * se:.1f} | {n} | {_verdict(d, se)} |")
    if not selection:
        return lines + [""]
    lines += ["", f"Rate selection: mean validation accuracy (%) of seed 0 over {', '.join(s['selecting_tasks'])}, per rate "
              "(the chosen one is used for every seed and every task).", "", "| method | " + " | ".join(f"lr {lr:g}" for lr in (1e-3, 3e-3)) + " | chosen |",
              "|---|---|---|---|"]
    for key, m in methods.items():
        if key == "zero_shot":
            continue
        if "validation_by_lr" not in m:
            continue
        cells = [f"{100 * m['validation_by_lr'][lr]:.1f}" if lr in m["validation_by_lr"] else "-" for lr in (1e-3, 3e-3)]
        lines.append(f"| {METHOD_NAMES[key]} | " + " | ".join(cells) + f" | {m['lr']:g} |")
    return lines + [""]


def packing_rows(data: dict[str, Any]) -> list[dict[str, Any]]:
    """Every packing/baseline point, with the best alternative that takes no more bytes."""
    rows = [dict(u, key=k) for k, u in data["units"].items() if k != "original"]
    for r in rows:
        if r["method"] != "pack":
            continue
        cheaper = [b for b in rows if b["method"] != "pack" and b["bytes"] <= r["bytes"]]
        for kind in ("trunc", "int8", "trunc_int8"):
            same = [b for b in cheaper if b["method"] == kind]
            r[f"best_{kind}"] = min(same, key=lambda b: b["mean_loss"])["key"] if same else None
        best = min(cheaper, key=lambda b: b["mean_loss"]) if cheaper else None
        r["best_alternative"] = best["key"] if best else None
    return sorted(rows, key=lambda r: (r["method"] != "pack", -r["ratio"]))


def packing_section(data: dict[str, Any], command: str) -> list[str]:
    rows = packing_rows(data)
    by_key = {r["key"]: r for r in rows}
    tasks = data["meta"]["tasks"]
    orig = data["units"]["original"]["scores"]
    seconds = sum(u.get("seconds", 0) for u in data["units"].values())
    lines = ["## 2. Packing curve: the shipped MiniLM library", "", f"Reproduce: `{command}`", "",
             f"Library: {len(tasks)} rank-8 adapters ({data['meta']['dtype']} factors), {data['meta']['unpacked_bytes']:,} "
             f"bytes unpacked (factors + passthrough heads, `PackStats.unpacked_bytes`). Original test accuracy (%): "
             + ", ".join(f"{t} {100 * orig[t]['accuracy']:.1f}" for t in tasks) + f". {seconds / 60:.0f} min of work.", "",
             "Loss = original accuracy - accuracy of the unpacked adapter, points, mean over the tasks ± SE over tasks "
             "(deterministic: each point ran once; the paired test-sample noise is what the SE shows). `best alternative` "
             "is the lowest-loss truncation / int8 / truncation+int8 point that takes **no more bytes** than the packed library.",
             "", "| method | l | pool | private | bytes | ratio | rel. ΔW error | loss (pts) | ± | best alternative (≤ bytes) | its ratio | its loss | packing - it (pts, paired) |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if r["method"] == "pack":
            alt = by_key.get(r["best_alternative"] or "")
            verdict = "-"
            if alt is not None:  # paired over tasks: the same test examples under both
                d, se = mean_se(r["loss_points"][t] - alt["loss_points"][t] for t in tasks)
                verdict = f"{d:+.1f} ± {se:.1f}: " + ("tie" if abs(d) <= 2 * se else "worse" if d > 0 else "better")
            lines.append(f"| pack | {r['shards_per_vector']} | {r['pool_size']} | {100 * r['private_fraction']:g}% | "
                         f"{r['bytes']:,} | {r['ratio']:.1f}x | {r['mean_error']:.3f} | {r['mean_loss']:.1f} | {r['se_loss']:.1f} | "
                         + (f"{alt['key']} | {alt['ratio']:.1f}x | {alt['mean_loss']:.1f} | {verdict} |" if alt else "none | | | |"))
        else:
            lines.append(f"| {r['key']} | | | | {r['bytes']:,} | {r['ratio']:.1f}x | | {r['mean_loss']:.1f} | {r['se_loss']:.1f} | | | | |")
    goal = [r["key"] for r in rows if r["ratio"] >= 8 and r["mean_loss"] <= 1]
    lines += ["", "Goal (8x smaller at <= 1 point mean loss): " + (", ".join(goal) if goal else "reached by no point") + ".",
              "", "Per-task loss (points) of each point:", "", "| point | " + " | ".join(tasks) + " |",
              "|---|" + "---|" * len(tasks)]
    for r in rows:
        lines.append(f"| {r['key']} | " + " | ".join(f"{r['loss_points'][t]:+.1f}" for t in tasks) + " |")
    return lines + [""]


def write_plot(out: Path, mos: dict[str, dict], packing: dict | None) -> None:
    """One PNG: MoS vs LoRA per task (one panel per base) and the packing curve."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = len(mos) + (1 if packing else 0)
    fig, axes = plt.subplots(1, max(panels, 1), figsize=(6 * max(panels, 1), 4.5), squeeze=False)
    for ax, (base, data) in zip(axes[0], mos.items()):
        s = mos_summary(data)
        keys = [k for k in ("zero_shot", "lora_r2", "mos", "lora_r8", "lora_r16") if k in s["methods"]]
        width = 0.8 / max(len(keys), 1)
        for j, k in enumerate(keys):
            m = s["methods"][k]
            ys = [100 * m["per_task"][t][0] for t in s["tasks"]]
            es = [0 if m["per_task"][t][1] != m["per_task"][t][1] else 100 * m["per_task"][t][1] for t in s["tasks"]]
            ax.bar([i + j * width for i in range(len(s["tasks"]))], ys, width, yerr=es,
                   label=f"{METHOD_NAMES[k]} ({m['parameters']:,} p.)")
        ax.set_xticks([i + 0.4 - width / 2 for i in range(len(s["tasks"]))], s["tasks"], rotation=35, ha="right", fontsize=7)
        ax.set_ylabel("test accuracy (%)")
        ax.set_ylim(0, 122)
        ax.set_title(f"MoS vs LoRA on {base} (mean ± SE over seeds)")
        ax.legend(fontsize=7, loc="upper center", ncol=2)
    if packing:
        ax = axes[0][-1]
        rows = packing_rows(packing)
        styles = {"trunc": ("o-", "rank truncation"), "int8": ("s", "int8"), "trunc_int8": ("^-", "truncation + int8")}
        for kind, (style, label) in styles.items():
            pts = sorted((r["ratio"], r["mean_loss"]) for r in rows if r["method"] == kind)
            if pts:
                ax.plot(*zip(*pts), style, label=label)
        for l in sorted({r["shards_per_vector"] for r in rows if r["method"] == "pack"}):
            pts = sorted((r["ratio"], r["mean_loss"]) for r in rows if r["method"] == "pack" and r["shards_per_vector"] == l
                         and r["private_fraction"] == 0)
            ax.plot(*zip(*pts), "x--", label=f"pack, l={l}")
        pts = sorted((r["ratio"], r["mean_loss"]) for r in rows if r["method"] == "pack" and r["private_fraction"] > 0)
        if pts:
            ax.plot(*zip(*pts), "d:", label="pack l=4 pool 256 + private")
        ax.axhline(1, color="grey", lw=0.8)
        ax.axvline(8, color="grey", lw=0.8)
        ax.set_xscale("log")
        ax.set_xticks([1, 2, 4, 8, 16], ["1x", "2x", "4x", "8x", "16x"])
        ax.minorticks_off()
        ax.set_xlabel("storage ratio (unpacked / stored bytes)")
        ax.set_ylabel("mean accuracy loss (points)")
        ax.set_title("Packing the MiniLM library")
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "shard_pools.png", dpi=110)
    plt.close(fig)


def write_report(out: Path) -> None:
    """``shard_pools.md`` + ``shard_pools.png`` from the JSON present; a hand-written findings block is kept."""
    load = lambda name: json.loads((out / name).read_text()) if (out / name).exists() else None  # noqa: E731
    mos = {}
    for b in ("minilm", "smollm2"):
        if (d := load(f"shard_pools_mos_{b}.json")):
            for sibling in sorted(out.glob(f"shard_pools_mos_{b}_*.json")):
                d["units"].update(json.loads(sibling.read_text())["units"])
            mos[b] = d
    packing = load("shard_pools_packing.json")
    md = out / "shard_pools.md"
    old = md.read_text() if md.exists() else ""
    findings = (old[old.index(FINDINGS_START): old.index(FINDINGS_END) + len(FINDINGS_END)]
                if FINDINGS_START in old and FINDINGS_END in old else f"{FINDINGS_START}\n(findings not written yet)\n{FINDINGS_END}")
    lines = ["# Shard pools (issue 12): MoS quality and the packing curve", "",
             "Generated by `scripts/shard_study.py --report` from `docs/shard_pools_*.json` (the findings block is "
             "hand-written and kept across regenerations). Everything ran on CPU (2 cores shared with other jobs).",
             "", "Reproduce everything: `ADAPTERHUB_BASES=/work/smolhome/bases .venv/bin/python scripts/shard_study.py --all` "
             "(resumes from the JSON; delete it to start over).", "", "![MoS and packing](shard_pools.png)", "",
             "## Findings", "", findings, ""]
    cmd = ".venv/bin/python scripts/shard_study.py"
    if "minilm" in mos:
        d = mos["minilm"]
        lines += mos_section("1a. MoS vs LoRA on MiniLM (all-MiniLM-L6-v2): 2 tasks x 3 seeds", d, f"{cmd} --mos-minilm",
                             "Two of the seven tasks of the shipped MiniLM library, three seeds; they also choose the "
                             "learning rates on validation. Similarity protocol, whole validation and test splits.",
                             only=d["meta"]["protocol"]["tasks"])
        lines += mos_section(
            "1a'. MoS vs LoRA on MiniLM: every library task", d,
            f"{cmd} --mos-minilm --tasks chat_language wn_animal_class wn_verb_supersense wn_noun_supersense chat_topic "
            "--part extra",
            "All seven library tasks (`wn_topic_domain` has no shipped adapter: its zero-shot accuracy is already "
            "89%): the five others ran in two more processes (`--part extra` and `--part extra2`, the same tasks in "
            "opposite orders), seed 0 first, at the rates chosen above; the row's mean and the comparisons use the "
            "seeds complete on all seven tasks; a cell's `(n s.)` gives its own seeds where they differ. LoRA r16 "
            "ran on the two tasks above only.", selection=False)
    else:
        lines += ["## 1a. MoS vs LoRA on MiniLM", "", "Not run.", ""]
    if "smollm2" in mos:
        lines += mos_section("1b. MoS vs LoRA on SmolLM2-135M-Instruct (reduced protocol)", mos["smollm2"],
                             f"ADAPTERHUB_BASES=/work/smolhome/bases {cmd} --mos-smollm2",
                             "Reduced protocol (a step costs 3-8 s on the shared cores): the two classification "
                             "tasks cheapest to score (4 and 3 answer options), a fixed step budget, fixed seeded "
                             "evaluation subsets; scored by answer log-likelihood (`eval.generative`). Seven Llama "
                             "projections adapted. Ran as two processes, one task each (`--tasks wn_adj_kind --part b`).")
    else:
        lines += ["## 1b. MoS vs LoRA on SmolLM2", "", "Not run.", ""]
    lines += packing_section(packing, f"{cmd} --packing") if packing else ["## 2. Packing curve", "", "Not run.", ""]
    lines += ["## 2b. Packing curve on the SmolLM2 library", "",
              "Not run: the deadline did not leave CPU time for it (evaluating the 9 SmolLM2 adapters once per point "
              "costs minutes on the shared cores).", ""]
    with atomic_write(md, "w") as f:
        f.write("\n".join(lines))
    write_plot(out, mos, packing)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--all", action="store_true", help="every part, then the report")
    parser.add_argument("--mos-minilm", action="store_true")
    parser.add_argument("--mos-smollm2", action="store_true")
    parser.add_argument("--packing", action="store_true")
    parser.add_argument("--report", action="store_true")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1: the cores are shared)")
    parser.add_argument("--tasks", nargs="+", default=None,
                        help="MoS parts: run only these of the protocol's tasks (to split a study over processes)")
    parser.add_argument("--part", default="", help="MoS parts: write shard_pools_mos_<base>_<part>.json (one per process)")
    parser.add_argument("--quick", action="store_true", help="a smoke run: one task, few steps, into /tmp")
    args = parser.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    out = Path("/tmp/shard_study_quick") if args.quick else DOCS
    if args.all or args.packing:
        from packing_curve import run_packing

        run_packing(out / "shard_pools_packing.json", quick=args.quick)
    part = f"_{args.part}" if args.part else ""
    if args.all or args.mos_minilm:
        from mos_quality import run_mos

        run_mos("minilm", out / f"shard_pools_mos_minilm{part}.json", quick=args.quick, tasks=args.tasks)
    if args.all or args.mos_smollm2:
        from mos_quality import run_mos

        run_mos("smollm2", out / f"shard_pools_mos_smollm2{part}.json", quick=args.quick, tasks=args.tasks)
    if args.all or args.report:
        write_report(out)


if __name__ == "__main__":
    main()
