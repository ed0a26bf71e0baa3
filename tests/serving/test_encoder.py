"""The gathered-factor batch on the real MiniLM: each row equals the models layer with its adapter
(or mixture) attached alone, whatever else shares the batch."""

from __future__ import annotations

import pytest
import torch

from adapterhub.errors import IncompatibleAdaptersError
from adapterhub.eval.library import library_dir
from adapterhub.lora import LoraAdapter, LoraModule
from adapterhub.models import cached_base_model, lora_attached
from adapterhub.serving import GatheredLinear, served_adapter
from adapterhub.serving.encoder import EncoderEngine

TASKS = ["wn_pos", "chat_topic", "wn_noun_supersense", "wn_verb_supersense"]
TEXTS = ["a small songbird", "how are you today, my friend?", "to run quickly across the field",
         "the bank raised its interest rates again", "green", "an old wooden table in the kitchen corner",
         "what is your favourite film", "she sings", "x", "a recipe for bread", "the moon", "hello"]


@pytest.fixture(scope="module")
def base():
    return cached_base_model()


@pytest.fixture(scope="module")
def engine(base):
    return EncoderEngine(base)


def _perturbed(adapter: LoraAdapter, seed: int, rank: int | None = None, keep: float = 1.0) -> LoraAdapter:
    """A distinct adapter of the same shapes: factors scaled and shifted by seeded noise; ``rank``
    keeps the first rows only, ``keep`` the first share of the modules."""
    g = torch.Generator().manual_seed(seed)
    modules = {}
    paths = adapter.module_paths
    for path in paths[: max(1, int(len(paths) * keep))]:
        m = adapter.module(path)
        r = rank or m.rank
        A = m.A[:r] + 0.02 * torch.randn(m.A[:r].shape, generator=g)
        B = m.B[:, :r] * (1 + seed / 4) + 0.02 * torch.randn(m.B[:, :r].shape, generator=g)
        modules[path] = LoraModule(A=A, B=B, scale=m.scale)
    return LoraAdapter.from_modules(modules, base_model=adapter.base_model)


@pytest.fixture(scope="module")
def adapters():
    shipped = [LoraAdapter.load(library_dir() / t) for t in TASKS]
    made = [_perturbed(shipped[i % 4], seed=i + 1) for i in range(4)]
    return shipped + made  # 8 distinct adapters


def _reference(base, text: str, adapters: list[LoraAdapter], weights: list[float]) -> torch.Tensor:
    if not adapters:
        return base.encode([text])[0]
    with lora_attached(base.model, adapters, weights=weights):
        return base.encode([text])[0]


def test_each_adapter_equals_the_models_layer_with_it_attached(base, engine, adapters):
    served = [served_adapter(str(i), a, engine.linears, engine.dtype) for i, a in enumerate(adapters)]
    got = engine.embed(TEXTS[:8], [[(s, 1.0)] for s in served])
    for i, adapter in enumerate(adapters):
        want = _reference(base, TEXTS[i], [adapter], [1.0])
        assert torch.allclose(got[i], want, atol=1e-5), (i, (got[i] - want).abs().max())
        assert not torch.allclose(want, base.encode([TEXTS[i]])[0], atol=1e-3)  # the adapter matters


def test_mixed_batch_of_8_adapters_2_mixtures_and_base_equals_each_alone(base, engine, adapters):
    served = [served_adapter(str(i), a, engine.linears, engine.dtype) for i, a in enumerate(adapters)]
    mixtures = [[(s, 1.0)] for s in served]
    mixtures += [[(served[0], 0.7), (served[5], 0.3)], [(served[1], 0.5), (served[2], 0.25), (served[7], -0.25)]]
    mixtures += [[], []]  # two rows on the bare base
    batch = engine.embed(TEXTS, mixtures)
    for i, (text, mixture) in enumerate(zip(TEXTS, mixtures)):
        alone = engine.embed([text], [mixture])[0]
        assert torch.allclose(batch[i], alone, atol=1e-5), (i, (batch[i] - alone).abs().max())
        parts = [adapters[int(s.key)] for s, _ in mixture]
        want = _reference(base, text, parts, [w for _, w in mixture])
        assert torch.allclose(batch[i], want, atol=1e-5), (i, (batch[i] - want).abs().max())


def test_different_ranks_and_partial_targets_share_a_batch(base, engine, adapters):
    low = _perturbed(adapters[0], seed=11, rank=3)
    partial = _perturbed(adapters[1], seed=12, keep=0.3)
    served = [served_adapter(k, a, engine.linears, engine.dtype) for k, a in (("low", low), ("partial", partial))]
    mixtures = [[(served[0], 1.0)], [(served[1], 1.0)], [(served[0], 0.5), (served[1], 0.5)]]
    got = engine.embed(TEXTS[:3], mixtures)
    wants = [_reference(base, TEXTS[0], [low], [1.0]), _reference(base, TEXTS[1], [partial], [1.0]),
             _reference(base, TEXTS[2], [low, partial], [0.5, 0.5])]
    for i, want in enumerate(wants):
        assert torch.allclose(got[i], want, atol=1e-5), (i, (got[i] - want).abs().max())


def test_the_engine_copies_the_base_and_leaves_it_alone(base, engine):
    assert not any(isinstance(m, GatheredLinear) for m in base.model.modules())
    assert sum(isinstance(m, GatheredLinear) for m in engine.model.modules()) == len(engine.linears) > 30
    assert torch.allclose(engine.embed(["hello"], [[]])[0], base.encode(["hello"])[0], atol=1e-6)


def test_an_adapter_of_another_base_is_refused(engine):
    wrong = LoraAdapter.from_modules(
        {"encoder.layer.0.attention.self.query": LoraModule(A=torch.zeros(4, 768), B=torch.zeros(768, 4), scale=1.0)},
        base_model="sentence-transformers/all-mpnet-base-v2",
    )
    with pytest.raises(IncompatibleAdaptersError, match="768"):
        served_adapter("x", wrong, engine.linears, engine.dtype)
    missing = LoraAdapter.from_modules(
        {"model.layers.0.self_attn.q_proj": LoraModule(A=torch.zeros(4, 384), B=torch.zeros(384, 4), scale=1.0)},
        base_model="HuggingFaceTB/SmolLM2-135M-Instruct",
    )
    with pytest.raises(IncompatibleAdaptersError, match="does not have"):
        served_adapter("y", missing, engine.linears, engine.dtype)
