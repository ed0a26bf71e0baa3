"""``adapterhub shard pack|unpack|stats|verify``: output, exit codes, one-line errors."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from tests.helpers import write_random_adapter


@pytest.fixture
def catalog(cli, tmp_path: Path):  # type: ignore[no-untyped-def]
    for i in range(3):
        assert cli("add", write_random_adapter(tmp_path / f"a{i}", i, rank=4), "--name", f"acme/a{i}").exit_code == 0
    return cli


def test_pack_stats_show_export_unpack(catalog, tmp_path):
    cli = catalog
    result = cli("shard", "pack", "--base", "tiny-bert", "--pool-size", "2", "--json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["adapters"] == 3
    assert sorted(n for p in summary["packed"] for n in p["names"]) == ["acme/a0", "acme/a1", "acme/a2"]
    stats = json.loads(cli("shard", "stats", "--json").stdout)
    assert [s["base_model"] for s in stats] == ["tiny-bert"] and stats[0]["adapters"] == 3
    table = cli("shard", "stats")
    assert table.exit_code == 0 and "1 packed library" in table.stdout
    shown = json.loads(cli("show", "acme/a0", "--json").stdout)
    assert shown["storage"]["packed"] and shown["storage"]["error"] > 0
    assert cli("export", "acme/a0", tmp_path / "out").exit_code == 0
    data = (tmp_path / "out" / "adapter_model.safetensors").read_bytes()
    assert hashlib.sha256(data).hexdigest() == shown["digest"]
    again = cli("shard", "pack", "--base", "tiny-bert")
    assert again.exit_code == 0 and "nothing new to pack" in again.stderr
    verify = cli("shard", "verify")
    assert verify.exit_code == 0 and "checked 3 packed adapter(s), failed: 0" in verify.stderr
    assert cli("verify").exit_code == 0
    unpacked = cli("shard", "unpack", "acme/a0")
    assert unpacked.exit_code == 0 and "unpacked acme/a0" in unpacked.stderr
    assert json.loads(cli("shard", "stats", "--json").stdout)[0]["adapters"] == 2


@pytest.mark.parametrize(
    "args, needle",
    [
        (["shard", "pack", "--base", "tiny-bert", "--pool-size", "0"], "--pool-size must be a positive number"),
        (["shard", "pack", "--base", "tiny-bert", "--private-budget", "-1"], "--private-budget must be >= 0"),
        (["shard", "pack", "--base", "nope"], "no catalog adapter has base model 'nope'"),
        (["shard", "unpack", "acme/a0"], "'acme/a0' is not packed"),
        (["shard", "unpack", "acme/missing"], "acme/missing"),
        (["shard", "stats", "--base", "tiny-bert"], "nothing of base 'tiny-bert' is packed"),
    ],
)
def test_bad_input_is_one_line_and_exit_1(catalog, args, needle):
    result = catalog(*args)
    assert result.exit_code == 1, result.output
    assert needle in result.stderr and len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.output


def test_mixed_bases_are_refused_naming_the_adapter(catalog, tmp_path):
    cli = catalog
    assert cli("add", write_random_adapter(tmp_path / "o", 9, base_model="other"), "--name", "acme/other").exit_code == 0
    result = cli("shard", "pack", "--base", "tiny-bert", "--adapter", "acme/a0", "--adapter", "acme/other")
    assert result.exit_code == 1 and "'acme/other' is for base 'other'" in result.stderr
    assert json.loads(cli("shard", "stats", "--json").stdout) == []


def test_shard_help_lists_its_subcommands(cli):
    result = cli("shard", "--help")
    assert result.exit_code == 0
    for sub in ("pack", "unpack", "stats", "verify"):
        assert f"  {sub}" in result.stdout
        assert cli("shard", sub, "--help").exit_code == 0
