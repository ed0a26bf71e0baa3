"""The reusable pieces of ``scripts/shard_study.py`` (statistics, resumable units, the equal-bytes pick).

Why: the issue-12 report's verdicts rest on these; a wrong SE or a baseline picked at *more* bytes
than the packed library would flip a finding silently.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))

from shard_study import Units, binomial_se_of_mean, mean_se, packing_rows, run_unit  # noqa: E402


def test_mean_se_matches_the_textbook_formula() -> None:
    m, se = mean_se([1.0, 2.0, 3.0])
    assert m == 2.0
    assert se == pytest.approx(1.0 / math.sqrt(3))
    assert math.isnan(mean_se([5.0])[1])
    assert math.isnan(mean_se([])[0])


def test_binomial_se_of_a_mean() -> None:
    assert binomial_se_of_mean([0.5], [100]) == pytest.approx(0.05)
    assert binomial_se_of_mean([0.5, 0.5], [100, 100]) == pytest.approx(math.sqrt(2 * 0.0025) / 2)


def test_units_resume_and_do_not_rerun(tmp_path: Path) -> None:
    path = tmp_path / "u.json"
    calls = []

    def work() -> dict:
        calls.append(1)
        return {"x": 1}

    units = Units(path, {"a": 1})
    run_unit(units, "k", work, log=lambda _: None)
    again = Units(path)
    run_unit(again, "k", work, log=lambda _: None)
    assert len(calls) == 1
    data = json.loads(path.read_text())
    assert data["meta"] == {"a": 1}
    assert data["units"]["k"]["x"] == 1 and "seconds" in data["units"]["k"]


def _point(key: str, method: str, nbytes: int, loss: float) -> dict:
    extra = {"shards_per_vector": 4, "pool_size": 64, "private_fraction": 0.0} if method == "pack" else {}
    return {"method": method, "bytes": nbytes, "ratio": 1000 / nbytes, "mean_loss": loss, "se_loss": 0.1, **extra}


def test_packing_compared_only_with_alternatives_of_no_more_bytes() -> None:
    data = {"units": {
        "original": {"scores": {}},
        "pack/a": _point("pack/a", "pack", 100, 3.0),
        "trunc/k1": _point("trunc/k1", "trunc", 90, 5.0),
        "trunc/k2": _point("trunc/k2", "trunc", 180, 0.5),  # better but larger: not a fair comparison
        "int8": _point("int8", "int8", 100, 4.0),
    }}
    rows = {r["key"]: r for r in packing_rows(data)}
    assert rows["pack/a"]["best_alternative"] == "int8"
    assert rows["pack/a"]["best_trunc"] == "trunc/k1"
    assert rows["pack/a"]["best_trunc_int8"] is None
