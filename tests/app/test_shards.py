"""Packing the catalog into shard pools (``adapterhub shard``): transparent reads, incremental
packing, unpack, gc/verify and bad input. Small random adapters, so every test runs in seconds."""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

import pytest
import torch

from adapterhub.app import AdapterHub
from adapterhub.errors import BlobCorruptError, IncompatibleAdaptersError, InvalidAdapterError, InvalidParameterError
from adapterhub.lora import WEIGHTS_NAME
from tests.helpers import random_adapter, toy_adapter

NAMES = ["acme/a0", "acme/a1", "acme/a2"]


@pytest.fixture
def hub(home: Path):
    with AdapterHub(home) as hub:
        for i, name in enumerate(NAMES):
            hub.add_adapter(random_adapter(i, rank=4), name)
        yield hub


def _weights(hub: AdapterHub, name: str, folder: Path) -> bytes:
    hub.export(name, folder / name.replace("/", "_"), force=True)
    return (folder / name.replace("/", "_") / WEIGHTS_NAME).read_bytes()


def _library(hub: AdapterHub, base: str = "tiny-bert"):  # type: ignore[no-untyped-def]
    from adapterhub.app.shard_pools import parse_pool

    [row] = [r for r in hub.shard_stats() if r["base_model"] == base]
    return parse_pool(hub.blobs.path(row["pool_digest"]))


def _pool_digest(hub: AdapterHub, base: str = "tiny-bert") -> str:
    return hub.shard_stats(base)[0]["pool_digest"]


def test_exact_pack_reads_back_byte_identical_and_frees_the_originals(hub, tmp_path):
    before = {n: _weights(hub, n, tmp_path / "before") for n in NAMES}
    digests = {n: hub.get(n).digest for n in NAMES}
    summary = hub.shard_pack("tiny-bert", private_budget=math.inf, pool_size=4)
    assert summary["adapters"] == 3 and all(p["exact"] for p in summary["packed"])
    assert {n: hub.get(n).digest for n in NAMES} == digests  # same bytes: no new revision
    assert not any(hub.blobs.has(d) for d in digests.values())  # the saving
    assert [len(hub.catalog.revisions(n)) for n in NAMES] == [1, 1, 1]
    for n in NAMES:
        assert _weights(hub, n, tmp_path / "after") == before[n]
    storage = hub.show("acme/a1")["storage"]
    assert storage["packed"] and storage["exact"] and storage["error"] == 0.0
    assert storage["pool_digest"] == _pool_digest(hub)


def test_lossy_pack_is_a_new_revision_and_reads_give_the_pools_reconstruction(hub, tmp_path):
    originals = {n: hub.get(n).digest for n in NAMES}
    summary = hub.shard_pack("tiny-bert", pool_size=2, private_budget=0)
    library = _library(hub)
    for n in NAMES:
        record = hub.get(n)
        assert record.digest != originals[n] and not hub.blobs.has(originals[n])
        [new, old] = hub.catalog.revisions(n)[:2]
        assert new.message.startswith("shard-pack: pool ") and old.digest == originals[n]
        expected = library.unpack(record.digest)
        loaded = hub.load(n)
        for path, module in expected.modules():
            assert torch.equal(loaded.module(path).A, module.A) and torch.equal(loaded.module(path).B, module.B)
        assert hashlib.sha256(_weights(hub, n, tmp_path)).hexdigest() == record.digest
    shown = hub.show("acme/a0")["storage"]
    assert shown["packed"] and not shown["exact"] and shown["error"] > 0
    assert shown["original_digest"] == originals["acme/a0"] and shown["bytes"]["own"] > 0
    assert {p["digest"] for p in summary["packed"]} == {hub.get(n).digest for n in NAMES}
    stats = hub.shard_stats("tiny-bert")[0]
    assert stats["adapters"] == 3 and stats["max_error"] >= stats["mean_error"] > 0 and stats["names"] == NAMES
    assert hub.verify() == {"missing": [], "corrupt": []}  # lossy originals and rebuildable weights are not "missing"


def test_keep_originals_keeps_the_blobs(hub):
    originals = {n: hub.get(n).digest for n in NAMES}
    hub.shard_pack("tiny-bert", pool_size=2, keep_originals=True)
    assert all(hub.blobs.has(d) for d in originals.values())


def test_merge_over_packed_adapters_equals_merge_of_their_reconstructions(hub):
    hub.shard_pack("tiny-bert", pool_size=2)
    hub.merge(["acme/a0", "acme/a1"], method="linear", weights=[0.25, 0.75], name="acme/merged")
    out = hub.load("acme/merged")
    a, b = hub.load("acme/a0"), hub.load("acme/a1")
    for path, module in out.modules():
        dense = 0.25 * a.module(path).delta() + 0.75 * b.module(path).delta()
        assert torch.allclose(module.delta(), dense, atol=1e-5)


def test_incremental_pack_adds_new_adapters_without_touching_the_others(hub):
    hub.shard_pack("tiny-bert", pool_size=2)
    before = {n: hub.get(n).digest for n in NAMES}
    first_pool = _pool_digest(hub)
    hub.add_adapter(random_adapter(7, rank=4), "acme/new")
    summary = hub.shard_pack("tiny-bert")
    assert [p["names"] for p in summary["packed"]] == [["acme/new"]]
    assert {n: hub.get(n).digest for n in NAMES} == before  # not repacked
    assert _pool_digest(hub) != first_pool and hub.shard_stats()[0]["adapters"] == 4
    for n in [*NAMES, "acme/new"]:  # every one rebuilds from the grown pools to its digest
        hub.blobs.delete(hub.get(n).digest)
        hub.load(n, verify=True)
    assert hub.shard_pack("tiny-bert")["packed"] == []  # nothing new
    with pytest.raises(InvalidParameterError, match="--repack"):
        hub.shard_pack("tiny-bert", pool_size=64)
    again = hub.shard_pack("tiny-bert", pool_size=64, repack=True)
    assert again["adapters"] == 4 and again["parameters"]["pool_size"] == 64
    assert hub.shard_verify()["failed"] == []


def test_unpack_stores_a_plain_blob_and_drops_it_from_the_library(hub):
    hub.shard_pack("tiny-bert", pool_size=2)
    digest = hub.get("acme/a1").digest
    result = hub.shard_unpack("acme/a1")
    assert result["digest"] == digest == hub.get("acme/a1").digest and hub.blobs.verify(digest)
    assert hub.show("acme/a1")["storage"]["packed"] is False
    assert hub.shard_stats()[0]["adapters"] == 2
    hub.gc(grace_seconds=0)
    assert hub.blobs.verify(digest)  # a plain blob again: gc keeps it
    with pytest.raises(InvalidParameterError, match="not packed"):
        hub.shard_unpack("acme/a1")
    hub.shard_unpack("acme/a0")
    hub.shard_unpack("acme/a2")
    assert hub.shard_stats() == []  # the last one out drops the library
    assert hub.verify() == {"missing": [], "corrupt": []}


def test_gc_drops_rebuilt_weights_but_keeps_pools(hub, tmp_path):
    hub.shard_pack("tiny-bert", pool_size=2)
    digest = hub.get("acme/a0").digest
    pool = _pool_digest(hub)
    hub.load("acme/a0")
    assert hub.blobs.has(digest)  # rebuilt on read
    hub.gc(grace_seconds=3600)
    assert hub.blobs.has(digest)  # used within the grace period
    result = hub.gc(grace_seconds=0)
    assert digest in result["blobs"] and pool not in result["blobs"] and hub.blobs.has(pool)
    assert hub.load("acme/a0", verify=True)  # rebuilt again
    assert hub.verify() == {"missing": [], "corrupt": []}


def test_corrupt_pool_is_reported_and_other_adapters_keep_working(hub, home, tmp_path):
    hub.add_adapter(random_adapter(5, base_model="other-base"), "acme/other")
    hub.shard_pack("tiny-bert", pool_size=2)
    pool = _pool_digest(hub)
    path = hub.blobs.path(pool)
    path.chmod(0o600)
    data = bytearray(path.read_bytes())
    data[-5] ^= 0xFF
    path.write_bytes(bytes(data))
    hub.shard_libraries.clear()
    assert pool in hub.verify()["corrupt"]
    with pytest.raises(BlobCorruptError, match=f"(?s)shard pool blob {pool}.*acme/a0"):
        hub.load("acme/a0")
    failed = hub.shard_verify()["failed"]
    assert {f["digest"] for f in failed} == {hub.get(n).digest for n in NAMES}
    assert hub.load("acme/other").module_paths  # not packed: unaffected
    assert [r.name for r in hub.list()] == sorted([*NAMES, "acme/other"])
    assert hub.show("acme/a0")["storage"]["packed"]


def _save_library(tensors, meta) -> bytes:  # type: ignore[no-untyped-def]
    from safetensors.torch import save

    return save({k: v.contiguous().clone() for k, v in tensors.items()}, metadata={"adapterhub.shard.pack": json.dumps(meta)})


def test_out_of_range_pool_indices_in_a_stored_blob_fail_clearly(hub):
    from adapterhub.shard import PackedLibrary
    from adapterhub.store.artifacts import ArtifactRecord
    from adapterhub.store.shard_rows import LIBRARY, PACKED, put_rows

    hub.shard_pack("tiny-bert", pool_size=2)
    library = _library(hub)
    tensors, meta = library.to_tensors()
    key = next(k for k in sorted(tensors) if ".idx_" in k)
    tensors[key] = tensors[key].clone()
    tensors[key].view(-1)[0] = 60000
    with pytest.raises(InvalidAdapterError, match="outside pool"):
        PackedLibrary.from_tensors(tensors, meta)
    digest, size = hub.blobs.put_bytes(_save_library(tensors, meta))  # a blob that hashes right but is wrong
    with hub.catalog.transaction() as tx:
        put_rows(tx, [ArtifactRecord(LIBRARY, "tiny-bert", digest, digest, size)])
        put_rows(tx, [ArtifactRecord(PACKED, d, d, digest, 0) for d in library.adapters])
    hub.shard_libraries.clear()
    victim = next(n for n in NAMES if hub.get(n).digest == meta["adapters"][int(key.split(".")[0][1:])]["name"])
    with pytest.raises(BlobCorruptError, match=f"(?s)not a valid packed library.*{victim}.*outside pool"):
        hub.load(victim)


def test_bad_input_is_refused_before_anything_is_written(hub):
    with pytest.raises(InvalidParameterError, match="--pool-size"):
        hub.shard_pack("tiny-bert", pool_size=0)
    with pytest.raises(InvalidParameterError, match="--private-budget"):
        hub.shard_pack("tiny-bert", private_budget=-1)
    with pytest.raises(InvalidParameterError, match="no catalog adapter has base model 'nope'"):
        hub.shard_pack("nope")
    with pytest.raises(InvalidParameterError, match="not packed"):
        hub.shard_unpack("acme/a0")
    hub.add_adapter(random_adapter(9, base_model="other-base"), "acme/other")
    with pytest.raises(IncompatibleAdaptersError, match="one base per pack: 'acme/other' is for base 'other-base'"):
        hub.shard_pack("tiny-bert", adapters=["acme/a0", "acme/other"])
    hub.add_adapter(random_adapter(3, rank=4, d=16), "acme/small")
    with pytest.raises(IncompatibleAdaptersError, match="acme/small"):
        hub.shard_pack("tiny-bert")
    assert hub.shard_stats() == [] and all(hub.blobs.has(hub.get(n).digest) for n in NAMES)
    hub.shard_pack("tiny-bert", adapters=NAMES, pool_size=2)
    with pytest.raises(IncompatibleAdaptersError, match="acme/small"):  # incremental: same check
        hub.shard_pack("tiny-bert")


def test_a_failed_commit_leaves_only_what_was_there(hub, monkeypatch):
    from adapterhub.app import shards

    before = {n: hub.get(n).digest for n in NAMES}
    blobs_before = set(hub.blobs.digests())

    def boom(*args, **kwargs):  # type: ignore[no-untyped-def]
        raise RuntimeError("crash inside the transaction")

    monkeypatch.setattr(shards, "put_rows", boom)
    with pytest.raises(RuntimeError):
        hub.shard_pack("tiny-bert", pool_size=2)
    assert {n: hub.get(n).digest for n in NAMES} == before  # no revision committed
    assert set(hub.blobs.digests()) == blobs_before  # the new pool blob removed, originals kept
    assert [len(hub.catalog.revisions(n)) for n in NAMES] == [1, 1, 1]


def test_peft_scale_adapter_packs_with_the_same_update(home):
    with AdapterHub(home) as hub:
        for i in range(2):
            hub.add_adapter(toy_adapter(i), f"acme/t{i}")
        deltas = {n: hub.load(n).module("layer.0.q").delta() for n in ("acme/t0", "acme/t1")}
        hub.shard_pack("base", private_budget=math.inf)
        for n, delta in deltas.items():
            assert torch.allclose(hub.load(n).module("layer.0.q").delta(), delta, atol=1e-5)


def test_route_over_packed_library_adapters(home):
    from adapterhub.eval.library import library_dir

    with AdapterHub(home) as hub:
        for task in ("wn_pos", "wn_noun_supersense", "chat_topic"):
            hub.add(library_dir() / task, f"lib/{task}", task=task)
        base = hub.get("lib/wn_pos").base_model
        hub.shard_pack(base, pool_size=16)
        assert all(hub.show(f"lib/{t}")["storage"]["packed"] for t in ("wn_pos", "chat_topic"))
        [decision] = hub.route("a small songbird", router="arrow", top_k=2)
        assert decision.adapters and abs(sum(w for _, w in decision.adapters) - 1) < 1e-6
        from adapterhub.app.examples import stored_examples

        assert stored_examples(hub, "lib/wn_pos") is not None  # the new revision kept its example inputs


def test_gc_drops_a_library_once_its_adapters_are_removed(hub):
    hub.shard_pack("tiny-bert", pool_size=2)
    pool = _pool_digest(hub)
    for n in NAMES[:2]:
        hub.remove(n)
    hub.gc(grace_seconds=0)
    assert hub.blobs.has(pool) and hub.shard_stats()[0]["names"] == ["acme/a2"]
    hub.remove("acme/a2")
    result = hub.gc(grace_seconds=0)
    assert pool in result["blobs"] and hub.shard_stats() == []


def test_a_pack_racing_another_pack_of_the_base_writes_nothing(hub, monkeypatch):
    from adapterhub.app import shard_pools
    from adapterhub.errors import CommitConflictError

    real, calls = shard_pools.pool_bytes, []

    def racing(library, provenance):  # type: ignore[no-untyped-def]
        if not calls:  # another process packs the base while this one is packing
            calls.append(1)
            hub.shard_pack("tiny-bert", adapters=["acme/a2"], pool_size=2)
        return real(library, provenance)

    monkeypatch.setattr(shard_pools, "pool_bytes", racing)
    before = {n: hub.get(n).digest for n in NAMES[:2]}
    with pytest.raises(CommitConflictError, match="changed while this operation ran"):
        hub.shard_pack("tiny-bert", adapters=NAMES[:2], pool_size=2)
    assert hub.shard_stats()[0]["names"] == ["acme/a2"]
    assert {n: hub.get(n).digest for n in NAMES[:2]} == before and all(hub.blobs.has(d) for d in before.values())


def test_incremental_pack_takes_a_max_error(hub):
    hub.shard_pack("tiny-bert", adapters=NAMES[:2], pool_size=2)
    summary = hub.shard_pack("tiny-bert", max_error=0.0)  # grow the pools until the new one is (nearly) exact
    [added] = summary["packed"]
    assert added["names"] == ["acme/a2"] and added["error"] < 1e-5
