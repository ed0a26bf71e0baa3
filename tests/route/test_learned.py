"""Learned router: a deterministic logistic-regression router over example embeddings (synthetic, fast)."""

from __future__ import annotations

import pytest
import torch

from adapterhub.errors import InvalidParameterError
from adapterhub.route.learned import LearnedRouter


def _examples(n: int = 3, m: int = 16, d: int = 12, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(n, d, generator=g) * 3
    return {f"ns/a{i}": centres[i] + torch.randn(m, d, generator=g) for i in range(n)}


def test_routes_each_cluster_to_its_adapter_and_rows_sum_to_one() -> None:
    ex = _examples()
    router = LearnedRouter.fit(ex)
    queries = torch.cat([e[:4] for e in ex.values()])
    w = router.route(queries, top_k=1)
    assert w.argmax(dim=1).tolist() == [0] * 4 + [1] * 4 + [2] * 4
    w2 = router.route(queries, top_k=2, temperature=2.0)
    assert torch.allclose(w2.sum(dim=1), torch.ones(12))
    assert ((w2 > 0).sum(dim=1) == 2).all()


def test_fit_is_deterministic_and_state_round_trips() -> None:
    a, b = LearnedRouter.fit(_examples()), LearnedRouter.fit(_examples())
    assert torch.equal(a.weight, b.weight) and torch.equal(a.bias, b.bias)
    c = LearnedRouter.from_state(a.state_dict())
    q = torch.randn(5, 12)
    assert c.names == a.names and torch.equal(c.route(q, top_k=2), a.route(q, top_k=2))


def test_without_drops_one_row_and_keeps_the_rest() -> None:
    router = LearnedRouter.fit(_examples())
    smaller = router.without("ns/a1")
    assert smaller.names == ["ns/a0", "ns/a2"]
    assert torch.equal(smaller.weight, router.weight[[0, 2]])
    with pytest.raises(InvalidParameterError, match="no adapter"):
        router.without("ns/zz")


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: LearnedRouter.fit({}), "empty"),
        (lambda: LearnedRouter.fit({"a": torch.zeros(0, 4)}), "example embeddings"),
        (lambda: LearnedRouter.fit(_examples()).route(torch.randn(2, 12), top_k=0), "top_k"),
        (lambda: LearnedRouter.fit(_examples()).route(torch.randn(2, 5)), "n_queries"),
        (lambda: LearnedRouter.from_state({"names": ["a"]}), "lacks"),
        (lambda: LearnedRouter(["a", "a"], torch.zeros(2, 3), torch.zeros(2)), "unique"),
    ],
)
def test_bad_input_is_refused(call, message: str) -> None:
    with pytest.raises(InvalidParameterError, match=message):
        call()


def test_route_hedged_commits_when_sure_and_mixes_when_not() -> None:
    import math

    router = LearnedRouter.fit(_examples())
    queries = torch.cat([e[:2] for e in _examples().values()])
    assert torch.equal(router.route_hedged(queries, 0.0), router.route(queries, top_k=1))
    assert torch.allclose(router.route_hedged(queries, 1.0), torch.full((6, 3), 1 / math.sqrt(3)))
    with pytest.raises(InvalidParameterError, match="mass"):
        router.route_hedged(queries, 1.5)
