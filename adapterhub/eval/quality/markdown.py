"""The table as Markdown, rendered from ``QualityReport.to_dict()`` (so a saved JSON re-renders).

The demo renders its single all-task merge through the same function: it passes its own
``intro`` and ``footer`` and rows without standard errors, whose ``±`` columns are then left out.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from adapterhub.eval.quality.stats import TIE_SIGMAS
from adapterhub.merge.registry import WEIGHT_CONVENTIONS


def pct(x: float | None) -> str:
    """A fraction as a percentage with one decimal; empty for missing or NaN."""
    return "" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{100 * x:.1f}"


def num(x: float | None, digits: int = 3) -> str:
    """A number with ``digits`` decimals; empty for missing or NaN."""
    return "" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{digits}f}"


def _setup(data: Mapping[str, Any]) -> list[str]:
    plan, tasks = data["plan"], data["tasks"]
    cap = plan["max_examples"]
    return [
        f"Split: **{plan['split']}**"
        + (f" (at most {cap} examples per task, stratified by label, fixed)" if cap else " (all examples)")
        + f"; ranks k = {', '.join(map(str, plan['ks']))}; seeds {', '.join(map(str, plan['seeds']))} "
        f"for the all-task merge; {data['seconds'] / 60:.1f} min with {data['threads']} torch thread(s).",
        "",
        "Normalised accuracy = merged / the task's own adapter; retained gain = (merged - zero-shot) / "
        "(own - zero-shot); both averaged over a merge's tasks, then over the group's subsets (and seeds). "
        f"`±` is one standard error (seed spread + test-sample noise); differences within {TIE_SIGMAS:g} SE are ties.",
        "",
        "Subsets: " + "; ".join(
            f"{g['name']}: " + ", ".join("{" + ", ".join(s) + "}" for s in g["subsets"]) for g in data["groups"]
            if g["name"] != "all tasks"
        ) + ("; " if len(data["groups"]) > 1 else "") + f"all tasks: {len(tasks)} adapters.",
        "",
    ]


def _verdicts(verdicts: Sequence[Mapping[str, Any]]) -> list[str]:
    if not verdicts:
        return []
    lines = ["## LoRA-LEGO against the best baseline at equal rank", "",
             "| group | k | lego | best baseline (equal k) | its score | lego - best | SE | verdict |",
             "|---|---|---|---|---|---|---|---|"]
    for v in verdicts:
        lines.append(
            f"| {v['group']} | {v['k']} | {num(v['lego'])} | {v['best_label']} | {num(v['baseline'])} | "
            f"{v['delta']:+.3f} | {num(v['se'])} | {v['verdict']} |"
        )
    return lines + ["", "The best baseline is picked on the reported split itself, which favours the baselines.", ""]


def _auto_section(data: Mapping[str, Any]) -> list[str]:
    """Per group and k: both ``auto`` rows beside the best data-free row, and what auto chose."""
    autos = [r for rows in data["rows"].values() for r in rows if r["key"].startswith("auto/")]
    if not autos:
        return []
    lines = ["## auto: the merge the service picks", "",
             "| group | k | auto (examples) | ± | auto (rule) | ± | best other row on this split | its gain | "
             "auto (examples) chose |",
             "|---|---|---|---|---|---|---|---|---|"]
    for group, rows in data["rows"].items():
        for k in data["plan"]["ks"]:
            at_k = {r["key"]: r for r in rows if r["k"] == k}
            ex, rule = at_k.get("auto/examples"), at_k.get("auto/rule")
            if ex is None and rule is None:
                continue
            others = [r for r in at_k.values() if r["role"] != "auto"]
            best = max(others, key=lambda r: r["retained_gain"]) if others else None
            chosen: dict[str, int] = {}
            for c in data["cells"]:
                if c["group"] == group and c["k"] == k and c["spec"] == "auto/examples":
                    chosen[c["chosen"]] = chosen.get(c["chosen"], 0) + 1
            lines.append(
                f"| {group} | {k} | {num(ex and ex['retained_gain'], 2)} | {num(ex and ex.get('gain_se'), 2)} | "
                f"{num(rule and rule['retained_gain'], 2)} | {num(rule and rule.get('gain_se'), 2)} | "
                f"{best['label'] + ' w=' + best['weights'] if best else '-'} | {num(best and best['retained_gain'], 2)} | "
                + ", ".join(f"{key} x{n}" for key, n in sorted(chosen.items())) + " |"
            )
    lines += ["", "Retained gain = (merged - zero-shot) / (own - zero-shot), averaged over tasks, subsets and seeds. "
              "The best other row is picked on the reported split itself, which favours it over `auto`.", ""]
    return lines


def _selection(selection: Mapping[str, Any] | None) -> list[str]:
    if not selection:
        return []
    conventions = list(WEIGHT_CONVENTIONS)
    lines = [f"## Weight conventions picked on the validation split (all-task merge, k = {selection['k']})", "",
             "| method | " + " | ".join(f"w={WEIGHT_CONVENTIONS[c]}" for c in conventions) + " | picked |",
             "|---|" + "---|" * (len(conventions) + 1)]
    for method, scores in selection["scores"].items():
        lines.append(f"| {method} | " + " | ".join(num(scores.get(c)) for c in conventions)
                     + f" | {WEIGHT_CONVENTIONS[selection['picked'][method]]} |")
    lines.append("")
    if selection.get("candidates"):
        rule = selection["rule"]
        lines += [
            f"`auto` candidates (each method at its picked convention): {', '.join(selection['candidates'])}. "
            f"Data-free rule (best candidate on validation): `{rule['large']}` for 4 or more adapters, "
            f"`{rule['small']}` for fewer (pairs: "
            + ", ".join(f"{k} {num(v)}" for k, v in selection.get("pair_scores", {}).items()) + ").",
            "",
        ]
    return lines


def _group_table(data: Mapping[str, Any], group: Mapping[str, Any]) -> list[str]:
    """One group's table: the two reference rows, then every merge row, one column per task."""
    g, plan = group["name"], data["plan"]
    tasks = [t for t in data["tasks"] if any(t in s for s in group["subsets"])]
    rows = data["rows"][g]
    with_se = any(r.get("se") is not None for r in rows)  # the demo's single-seed rows have none

    def cells(normalised: str, se: str, gain: str, gain_se: str) -> str:
        return f"{normalised} | {se} | {gain} | {gain_se}" if with_se else f"{normalised} | {gain}"

    head = cells("norm. acc.", "±", "retained gain", "±")
    lines = [f"## {g}", "",
             f"| method | weights | k | rank | {head} | " + " | ".join(tasks) + " |",
             "|---|---|---|---|" + "---|" * (head.count("|") + 1) + "---|" * len(tasks)]
    for name, ref in data["reference_rows"][g].items():
        normalised, gain = num(ref["normalised"]), num(ref["retained_gain"], 2)
        scores = f"{normalised} | | {gain} |" if with_se else f"{normalised} | {gain}"
        lines.append(f"| **{name}** | | | | {scores} | " + " | ".join(pct(ref["accuracy"].get(t)) for t in tasks) + " |")
    for r in rows:
        seeds = "" if len(r["seeds"]) > 1 or g != "all tasks" or len(plan["seeds"]) == 1 else " †"
        scores = cells(num(r["normalised"]), num(r.get("se")), num(r["retained_gain"], 2), num(r.get("gain_se"), 2))
        lines.append(
            f"| {r['label']}{seeds} | {r['weights']} | {r['k'] if r['k'] is not None else 'exact'} | {r['rank']} | "
            f"{scores} | " + " | ".join(pct(r["accuracy"].get(t)) for t in tasks) + " |"
        )
    return lines + [""]


def render_markdown(
    data: Mapping[str, Any], *, title: str = "Merge quality", intro: str | None = None, footer: str | None = None
) -> str:
    """Markdown from ``QualityReport.to_dict()``: setup, verdicts, selection, one table per group.

    Args:
        data: the report dict (``plan``, ``tasks``, ``groups``, ``rows``, ``reference_rows``, ...).
        title: the level-1 heading.
        intro: a paragraph that replaces the generated setup paragraphs (split, ranks, seeds,
            definitions, subsets).
        footer: a last paragraph.
    """
    lines = [f"# {title}", ""]
    lines += [intro, ""] if intro is not None else _setup(data)
    lines += _verdicts(data.get("lego_vs_best_baseline") or [])
    lines += _auto_section(data)
    lines += _selection(data.get("selection"))
    for group in data["groups"]:
        lines += _group_table(data, group)
    if len(data["plan"]["seeds"]) > 1:
        lines += ["† deterministic: the seed cannot change this merge, so it ran once "
                  "(its ± is test-sample noise only).", ""]
    if footer is not None:
        lines += [footer, ""]
    return "\n".join(lines)
