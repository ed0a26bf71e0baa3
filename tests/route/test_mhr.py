"""MHR: the routed layer equals PEFT's ``poly`` layer, the export is an exact dense LoRA, training
touches only what each variant may train, and bad input is refused. Tiny shapes, offline, seeded."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from adapterhub.errors import IncompatibleAdaptersError, InvalidParameterError
from adapterhub.lora import LoraAdapter, LoraModule
from adapterhub.models.base import tiny_random_bert
from adapterhub.models.lora_layers import lora_attached, lora_layers, num_adapters
from adapterhub.route.mhr import MhrLinear, mix_factors, mixed_adapter, routing_weights, stack_inventory
from adapterhub.route.mhr_train import shots_digest, train_mhr
from tests.helpers import random_adapter_for

TEXTS = ["a cat sat", "dogs run fast", "to walk slowly", "quickly done", "big red ball", "he ran home"]
LABELS = [0, 0, 1, 1, 0, 1]
DESCRIPTIONS = ["a thing", "an action"]


def _inventory(model: nn.Module, ranks: tuple[int, ...] = (3, 3, 2)) -> list[LoraAdapter]:
    return [random_adapter_for(model, seed=10 + k, rank=r, std=0.3, scale=0.7) for k, r in enumerate(ranks)]


def _wrap(model: nn.Module, inv, logits: dict[str, torch.Tensor]) -> dict[str, MhrLinear]:
    wrappers = {}
    for path in inv.paths:
        wrappers[path] = MhrLinear(model.get_submodule(path), inv.A[path], inv.B[path], logits[path])
        parent, _, leaf = path.rpartition(".")
        setattr(model.get_submodule(parent), leaf, wrappers[path])
    return wrappers


def _unwrap(model: nn.Module, wrappers: dict[str, MhrLinear]) -> None:
    for path, w in wrappers.items():
        parent, _, leaf = path.rpartition(".")
        setattr(model.get_submodule(parent), leaf, w.base)


# -- the reference: PEFT's poly layer ------------------------------------------------------------


@pytest.mark.parametrize("n_splits", [1, 2, 4])
def test_routed_layer_equals_peft_poly_layer(n_splits: int) -> None:
    from peft.tuners.poly.config import PolyConfig
    from peft.tuners.poly.layer import Linear as PolyLinear

    torch.manual_seed(0)
    d_in, d_out, r, S, bs = 16, 24, 4, 3, 5
    base = nn.Linear(d_in, d_out)
    A = torch.randn(S, r, d_in)  # ours: (skill, r, d_in)
    B = torch.randn(S, d_out, r)  # ours: (skill, d_out, r)
    logits = torch.randn(n_splits, S)
    poly = PolyLinear(base, "default", PolyConfig(r=r, n_skills=S, n_splits=n_splits, n_tasks=1, target_modules=["x"]))
    with torch.no_grad():
        for q in range(n_splits):
            cols = slice(q * d_in // n_splits, (q + 1) * d_in // n_splits)
            rows = slice(q * d_out // n_splits, (q + 1) * d_out // n_splits)
            for s in range(S):
                poly.poly_lora_A["default"][q, s] = A[s][:, cols].T
                poly.poly_lora_B["default"][q, s] = B[s][rows, :].T
        poly.poly_router["default"].module_logits.copy_(logits.reshape(1, -1))
    poly.eval()
    x = torch.randn(bs, 7, d_in)
    expected = poly(x, task_ids=torch.zeros(bs, dtype=torch.long))
    ours = MhrLinear(base, A, B / r, logits).eval()  # PEFT scales the update by 1/r; ours folds scales into B
    torch.testing.assert_close(ours(x), expected, atol=1e-5, rtol=1e-5)
    # the exported dense factors give the same update
    a, b = mix_factors(A, B / r, routing_weights(logits))
    torch.testing.assert_close(base(x) + x @ a.T @ b.T, expected, atol=1e-5, rtol=1e-5)


# -- the export ----------------------------------------------------------------------------------


def test_dense_export_equals_routed_forward_and_is_a_plain_lora() -> None:
    bm = tiny_random_bert(seed=1)
    adapters = _inventory(bm.model)
    inv = stack_inventory(adapters)
    g = torch.Generator().manual_seed(3)
    logits = {p: torch.randn(4, 3, generator=g) * 2 for p in inv.paths}
    dense = mixed_adapter(inv, logits=logits)
    assert dense.ranks() == {p: 3 for p in inv.paths}  # rank r (padded max), not S·r
    assert dense.base_model == adapters[0].base_model
    wrappers = _wrap(bm.model, inv, logits)
    try:
        bm.model.eval()
        routed = bm.encode(TEXTS)
    finally:
        _unwrap(bm.model, wrappers)
    with lora_attached(bm.model, [dense]):
        exported = bm.encode(TEXTS)
    torch.testing.assert_close(exported, routed, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("k", [0, 2])
def test_one_hot_routing_reproduces_that_inventory_adapter(k: int) -> None:
    bm = tiny_random_bert(seed=1)
    adapters = _inventory(bm.model)  # adapter 2 has rank 2: padding must not change it
    inv = stack_inventory(adapters)
    one_hot = {p: nn.functional.one_hot(torch.full((1,), k), 3).float() for p in inv.paths}
    by_weights = mixed_adapter(inv, weights=one_hot)
    logits = {p: (torch.full((4, 3), -1e4)).index_fill(1, torch.tensor([k]), 1e4) for p in inv.paths}
    by_logits = mixed_adapter(inv, logits=logits)
    for path in inv.paths:
        want = adapters[k].delta_weight(path)
        torch.testing.assert_close(by_weights.delta_weight(path), want, atol=1e-6, rtol=0)
        torch.testing.assert_close(by_logits.delta_weight(path), want, atol=1e-6, rtol=0)


def test_uniform_routing_is_the_factor_average() -> None:
    bm = tiny_random_bert(seed=1)
    adapters = _inventory(bm.model, ranks=(3, 3, 3))
    avg = mixed_adapter(stack_inventory(adapters))
    path = avg.module_paths[0]
    A = torch.stack([a.module(path).folded()[1] for a in adapters]).mean(0)
    B = torch.stack([a.module(path).folded()[0] for a in adapters]).mean(0)
    torch.testing.assert_close(avg.delta_weight(path), B @ A, atol=1e-6, rtol=0)


# -- training ------------------------------------------------------------------------------------


def test_mhr_z_trains_only_routing_and_restores_the_model() -> None:
    bm = tiny_random_bert(seed=1)
    adapters = _inventory(bm.model)
    before = {n: p.detach().clone() for n, p in bm.model.named_parameters()}
    grads = {n: p.requires_grad for n, p in bm.model.named_parameters()}
    inv_before = [a.digest for a in adapters]
    res = train_mhr(bm, adapters, TEXTS, LABELS, DESCRIPTIONS, variant="z", n_heads=2, steps=4, lr=0.5, seed=0,
                    inventory_names=["a", "b", "c"], snapshot_steps=[2])
    assert [a.digest for a in adapters] == inv_before
    assert not list(lora_layers(bm.model)) and not any(isinstance(m, MhrLinear) for m in bm.model.modules())
    for n, p in bm.model.named_parameters():
        assert torch.equal(p, before[n]) and p.requires_grad == grads[n]
    assert set(res.routing) == set(adapters[0].module_paths)
    assert all(t.shape == (2, 3) for t in res.routing.values())
    assert max(t.abs().max().item() for t in res.routing.values()) > 0.1  # moved from U(-1e-3, 1e-3)
    want = mixed_adapter(stack_inventory(adapters), logits=res.routing)
    assert res.adapter.digest == want.digest
    assert set(res.snapshots) == {2} and len(res.losses) == 4
    meta = res.meta
    assert meta["variant"] == "z" and [i["name"] for i in meta["inventory"]] == ["a", "b", "c"]
    assert meta["inventory"][0]["digest"] == adapters[0].digest
    assert meta["shots_digest"] == shots_digest(TEXTS, LABELS)
    again = train_mhr(bm, adapters, TEXTS, LABELS, DESCRIPTIONS, variant="z", n_heads=2, steps=4, lr=0.5, seed=0)
    assert again.adapter.digest == res.adapter.digest  # seeded: same routing


def test_mhr_mu_starts_at_the_average_and_fine_tunes_factors() -> None:
    bm = tiny_random_bert(seed=1)
    adapters = _inventory(bm.model)
    avg = mixed_adapter(stack_inventory(adapters))
    zero = train_mhr(bm, adapters, TEXTS, LABELS, DESCRIPTIONS, variant="mu", steps=0)
    path = avg.module_paths[0]
    torch.testing.assert_close(zero.adapter.delta_weight(path), avg.delta_weight(path), atol=1e-6, rtol=0)
    res = train_mhr(bm, adapters, TEXTS, LABELS, DESCRIPTIONS, variant="mu", steps=3, lr=1e-2)
    assert res.routing == {} and num_adapters(bm.model) == 0
    assert not torch.allclose(res.adapter.delta_weight(path), avg.delta_weight(path))
    assert res.adapter.ranks() == avg.ranks()


def test_shots_digest_depends_on_texts_and_labels() -> None:
    assert shots_digest(TEXTS, LABELS) == shots_digest(list(TEXTS), tuple(LABELS))
    assert shots_digest(TEXTS, LABELS) != shots_digest(TEXTS, [1 - y for y in LABELS])


# -- refusals ------------------------------------------------------------------------------------


def test_bad_input_is_refused() -> None:
    bm = tiny_random_bert(seed=1)
    adapters = _inventory(bm.model)
    with pytest.raises(InvalidParameterError, match="empty"):
        train_mhr(bm, [], TEXTS, LABELS, DESCRIPTIONS)
    with pytest.raises(InvalidParameterError, match="at least 1 labelled shot"):
        train_mhr(bm, adapters, [], [], DESCRIPTIONS)
    with pytest.raises(InvalidParameterError, match="unknown MHR variant"):
        train_mhr(bm, adapters, TEXTS, LABELS, DESCRIPTIONS, variant="x")  # type: ignore[arg-type]
    with pytest.raises(InvalidParameterError, match="n_heads"):
        train_mhr(bm, adapters, TEXTS, LABELS, DESCRIPTIONS, n_heads=5)
    with pytest.raises(InvalidParameterError, match="label 7"):
        train_mhr(bm, adapters, TEXTS, [7] * len(TEXTS), DESCRIPTIONS)
    other_base = random_adapter_for(bm.model, seed=99, base_model="someone/else")
    with pytest.raises(IncompatibleAdaptersError, match="different base models"):
        train_mhr(bm, [*adapters, other_base], TEXTS, LABELS, DESCRIPTIONS)
    first_path = adapters[0].module_paths[0]
    partial = random_adapter_for(bm.model, seed=98, only=[first_path])
    with pytest.raises(IncompatibleAdaptersError, match="other modules"):
        train_mhr(bm, [*adapters, partial], TEXTS, LABELS, DESCRIPTIONS)
    d_out, d_in, _ = adapters[0].module_shape(first_path)
    wrong = {p: m for p, m in adapters[0].modules()}
    wrong[first_path] = LoraModule(torch.randn(2, d_in + 1), torch.randn(d_out, 2), 1.0)
    misshapen = LoraAdapter.from_modules(wrong, base_model=adapters[0].base_model)
    with pytest.raises(IncompatibleAdaptersError, match="d_out, d_in"):
        train_mhr(bm, [*adapters, misshapen], TEXTS, LABELS, DESCRIPTIONS)


def test_study_shots_are_stratified_seeded_and_from_train() -> None:
    from adapterhub.route.mhr_train import sample_shots
    from adapterhub.tasks import Example, Label, Task

    examples = tuple(Example(f"t{i}", f"text {i}", i % 3, "train") for i in range(30)) + (
        Example("v0", "val", 0, "validation"),)
    task = Task("toy", "toy", tuple(Label(n, n) for n in "abc"), "src", "lic", examples)
    idx = sample_shots(task, 16, seed=4)
    labels = [task.label_ids("train")[i] for i in idx]
    assert len(set(idx)) == 16 and sorted(labels.count(c) for c in range(3)) == [5, 5, 6]
    assert sample_shots(task, 16, seed=4) == idx and sample_shots(task, 16, seed=5) != idx
