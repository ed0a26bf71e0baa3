"""A short run of bench/hub_load.py against a live server: no errors, no corrupt blob after."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench" / "hub_load.py"


def load_bench():
    spec = importlib.util.spec_from_file_location("hub_load_bench", BENCH)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_concurrent_pulls_and_pushes(live, tmp_path):
    bench = load_bench()
    repos = [live.hub.add_adapter(bench.make_adapter(500 + i), f"seed/load-{i}").name for i in range(3)]
    result = bench.run_load(live.url, live.token, repos, tmp_path, duration=5, pullers=8, pushers=2)
    assert result.errors == []
    assert result.pulls >= 8 and result.pushes >= 2
    check = bench.verify_store(live.home, result.commits)
    assert check["corrupt"] == [] and check["missing"] == [] and check["wrong_commits"] == []
    assert check["staging_leftovers"] == []
    assert check["blobs_checked"] >= len(repos)
