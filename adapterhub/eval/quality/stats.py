"""The table's arithmetic: relative scores, means and variances (pure Python, no torch).

Per task, ``normalised accuracy = merged / own`` and ``retained gain = (merged - zero-shot) /
(own - zero-shot)``, where *own* is the task's own adapter and *zero-shot* the base model alone,
both measured on the same examples.

Noise: a row's standard error combines the seed spread (standard error of the mean over seeds)
and the sampling error of the test examples (per-example correctness, binomial per task, carried
through the normalisation). Two rows are compared *paired* on the same examples: the difference
of mean normalised accuracy gets ``SE = sqrt(SE_paired_examples^2 + SE_seed_a^2 + SE_seed_b^2)``;
a difference within ``TIE_SIGMAS`` SE is reported as a tie.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

TIE_SIGMAS = 2.0


def relative(accuracy: float, own: float, zero_shot: float) -> tuple[float, float]:
    """``(merged / own, (merged - zero-shot) / (own - zero-shot))``; NaN where undefined."""
    norm = accuracy / own if own else math.nan
    gain = (accuracy - zero_shot) / (own - zero_shot) if own != zero_shot else math.nan
    return norm, gain


def mean(values: Sequence[float]) -> float:
    """The mean; NaN for no values."""
    return sum(values) / len(values) if values else math.nan


def var(values: Sequence[float]) -> float:
    """Sample variance (ddof 1); 0 for fewer than two values."""
    if len(values) < 2:
        return 0.0
    m = mean(values)
    return sum((v - m) ** 2 for v in values) / (len(values) - 1)


def paired_var(diffs: Sequence[float]) -> float:
    """Variance of the mean of per-example values."""
    return var(diffs) / len(diffs) if diffs else 0.0


def reference_rows(
    tasks: Sequence[str], zero_shot: Mapping[str, float], own: Mapping[str, float]
) -> dict[str, dict[str, Any]]:
    """The zero-shot and individual-adapter rows over ``tasks``, normalised like merged rows.

    Returns:
        ``{"zero-shot": {...}, "individual": {...}}``, each ``{"accuracy": {task: acc},
        "normalised", "retained_gain"}`` (means over the tasks).
    """
    out = {}
    for name, accs in (("zero-shot", zero_shot), ("individual", own)):
        rel = [relative(accs[t], own[t], zero_shot[t]) for t in tasks]
        out[name] = {"accuracy": {t: accs[t] for t in tasks}, "normalised": mean([r[0] for r in rel]),
                     "retained_gain": mean([r[1] for r in rel])}
    return out
