"""Learned router: a multinomial logistic regression over base-model embeddings, one class per adapter.

Trained on the same stored examples as the prototype router (``adapterhub_examples.jsonl``, at most
32 per adapter): the features are the unit base-model embeddings of the examples, the class is the
adapter they came with. A centroid only knows where an adapter's inputs are on average; a linear
classifier also learns which directions *separate* adapters whose inputs look alike (the WordNet
tasks all take dictionary glosses), which is where the prototype router loses queries.

The fit is full-batch L-BFGS from zero weights on a convex, L2-regularised loss, so it is
deterministic: the same examples give the same weights on every run. The state
(``weight (n, hidden)``, ``bias (n,)``, ``names``) is what the catalog stores (``state_dict`` /
``from_state``). Removing an adapter drops its row (the remaining logits still rank the remaining
adapters); adding one refits from the stored example embeddings, which takes milliseconds.

On the shipped bed a single routed adapter is worse than the uniform mixture of all of them (a
wrong adapter hurts more than a diluted right one), so two hedged mixtures of the posterior live
here too: ``nucleus_weights`` (``LearnedRouter.route_hedged``: the adapters that hold ``mass`` of
the posterior, 1/sqrt(m) each) and ``boosted_weights`` (uniform plus extra weight on the top-1).
See docs/routing.md.

Example:
    >>> router = LearnedRouter.fit({name: model.encode(read_examples(path)) for name, path in ...})
    >>> router.route(model.encode(["a query"]), top_k=1)
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch
import torch.nn.functional as F

from adapterhub.errors import InvalidParameterError
from adapterhub.route.base import check_route_params, top_k_softmax
from adapterhub.route.prototype import check_query_embeddings

__all__ = ["DEFAULT_L2", "LearnedRouter", "boosted_weights", "fit_logistic", "nucleus_weights"]

DEFAULT_L2 = 1e-3
"""L2 penalty on the weights (mean loss + l2 * ||W||^2): keeps 32-example classes from overfitting."""


def fit_logistic(
    features: torch.Tensor, labels: torch.Tensor, n_classes: int, *, l2: float = DEFAULT_L2, max_iter: int = 200
) -> tuple[torch.Tensor, torch.Tensor]:
    """Multinomial logistic regression by L-BFGS: returns ``(weight (C, d), bias (C,))``.

    Features are L2-normalised first (so are queries at routing time). Deterministic: zero init,
    full batch, no sampling.
    """
    x = F.normalize(features.detach().float(), dim=-1)
    y = labels.long()
    weight = torch.zeros(n_classes, x.shape[1], requires_grad=True)
    bias = torch.zeros(n_classes, requires_grad=True)
    opt = torch.optim.LBFGS([weight, bias], lr=1.0, max_iter=max_iter, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = F.cross_entropy(x @ weight.T + bias, y) + l2 * weight.pow(2).sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        opt.step(closure)
    return weight.detach(), bias.detach()


def nucleus_weights(probs: torch.Tensor, mass: float) -> torch.Tensor:
    """The hedged router's mixture: the smallest set of adapters whose posterior mass reaches ``mass``,
    each at weight 1/sqrt(m) for a set of m.

    ``mass`` = 0 is top-1 routing, ``mass`` = 1 the uniform 1/sqrt(n) mixture of all adapters; in
    between, a query the router is sure of gets its adapter whole, and an ambiguous one (a gloss that
    three WordNet tasks could be asking about) an even mixture of the plausible adapters only. Even
    1/sqrt(m) weights because that is what the merge study found best for a static mixture: a wrong
    adapter at full weight hurts, a 1/m share dilutes the right one.
    """
    ordered, index = probs.sort(dim=1, descending=True)
    m = ((ordered.cumsum(dim=1) < mass).sum(dim=1) + 1).clamp(max=probs.shape[1])
    keep = torch.arange(probs.shape[1]).expand_as(probs) < m[:, None]
    even = keep.float() / m[:, None].float().sqrt()
    return torch.zeros_like(probs).scatter(1, index, even)


def boosted_weights(probs: torch.Tensor, boost: float) -> torch.Tensor:
    """The uniform 1/sqrt(n) mixture of every adapter plus ``boost`` on the router's top-1.

    The uniform mixture is the strongest label-free baseline; a misrouted query keeps it (the right
    adapter is still in the mix), a well-routed one gets its own adapter amplified.
    """
    n = probs.shape[1]
    return torch.full_like(probs, 1 / math.sqrt(n)) + boost * torch.nn.functional.one_hot(probs.argmax(dim=1), n)


class LearnedRouter:
    """A linear classifier over unit base embeddings; its logits go through top-k softmax.

    Attributes:
        names: adapter names, the column order of ``route``.
        weight: ``(n_adapters, hidden)``; bias: ``(n_adapters,)``.
    """

    def __init__(self, names: list[str], weight: torch.Tensor, bias: torch.Tensor) -> None:
        n = len(names)
        if n < 1:
            raise InvalidParameterError("routing needs at least one adapter to route to (the inventory is empty)")
        if len(set(names)) != n:
            raise InvalidParameterError("adapter names in a learned router must be unique")
        if weight.ndim != 2 or weight.shape[0] != n or bias.shape != (n,):
            raise InvalidParameterError(
                f"learned router state must be weight ({n}, hidden) and bias ({n},), "
                f"got {tuple(weight.shape)} and {tuple(bias.shape)}"
            )
        self.names = list(names)
        self.weight = weight.detach().float()
        self.bias = bias.detach().float()

    @classmethod
    def fit(cls, examples: Mapping[str, torch.Tensor], *, l2: float = DEFAULT_L2) -> LearnedRouter:
        """Train on per-adapter example embeddings ``name → (m_i, hidden)``.

        With a single adapter there is nothing to separate: its logit is a constant.

        Raises:
            InvalidParameterError: no adapters, an adapter with no examples, mismatched widths.
        """
        names = list(examples)
        if not names:
            raise InvalidParameterError("routing needs at least one adapter to route to (the inventory is empty)")
        widths = {int(e.shape[-1]) for e in examples.values()}
        if len(widths) != 1 or any(e.ndim != 2 or e.shape[0] == 0 for e in examples.values()):
            raise InvalidParameterError("each adapter needs (m >= 1, hidden) example embeddings of one width")
        feats = torch.cat([examples[n].float() for n in names])
        labels = torch.cat([torch.full((examples[n].shape[0],), i) for i, n in enumerate(names)])
        if len(names) == 1:
            return cls(names, torch.zeros(1, feats.shape[1]), torch.zeros(1))
        weight, bias = fit_logistic(feats, labels, len(names), l2=l2)
        return cls(names, weight, bias)

    def without(self, name: str) -> LearnedRouter:
        """The router over the other adapters (its row dropped; nothing refitted).

        Raises:
            InvalidParameterError: unknown name, or it is the last adapter.
        """
        if name not in self.names:
            raise InvalidParameterError(f"no adapter named '{name}' in this router")
        keep = [i for i, n in enumerate(self.names) if n != name]
        return LearnedRouter([self.names[i] for i in keep], self.weight[keep], self.bias[keep])

    def state_dict(self) -> dict[str, object]:
        """``{"names": [...], "weight": Tensor, "bias": Tensor}`` for storage (e.g. safetensors + JSON)."""
        return {"names": list(self.names), "weight": self.weight.clone(), "bias": self.bias.clone()}

    @classmethod
    def from_state(cls, state: Mapping[str, object]) -> LearnedRouter:
        """Rebuild from ``state_dict()``'s output.

        Raises:
            InvalidParameterError: missing or mis-shaped entries.
        """
        try:
            names, weight, bias = state["names"], state["weight"], state["bias"]
        except KeyError as e:
            raise InvalidParameterError(f"learned router state lacks {e.args[0]!r}") from e
        if not isinstance(weight, torch.Tensor) or not isinstance(bias, torch.Tensor):
            raise InvalidParameterError("learned router weight and bias must be tensors")
        return cls(list(names), weight, bias)  # type: ignore[arg-type]

    def logits(self, query_embeddings: torch.Tensor) -> torch.Tensor:
        """Class logits ``(q, n_adapters)`` of unit-normalised queries."""
        q = F.normalize(check_query_embeddings(query_embeddings, self.weight.shape[1]), dim=-1)
        return q @ self.weight.T + self.bias

    def probabilities(self, query_embeddings: torch.Tensor) -> torch.Tensor:
        """The classifier's posterior over adapters ``(q, n_adapters)`` (a full softmax, no top-k)."""
        return torch.softmax(self.logits(query_embeddings), dim=-1)

    def route(self, query_embeddings: torch.Tensor, top_k: int = 1, temperature: float = 1.0) -> torch.Tensor:
        """Mixture weights ``(q, n_adapters)``: top-k softmax of logits / ``temperature``; rows sum to 1.

        Logits are already on the classifier's calibrated scale, so ``temperature=1`` keeps its
        posterior over the chosen ``top_k``.

        Raises:
            InvalidParameterError: bad ``top_k``/``temperature`` or malformed embeddings.
        """
        check_route_params(top_k, temperature, len(self.names))
        return top_k_softmax(self.logits(query_embeddings), top_k, temperature)

    def route_hedged(self, query_embeddings: torch.Tensor, mass: float = 0.8) -> torch.Tensor:
        """``nucleus_weights`` of the posterior: the best text-only setting on the shipped bed
        (docs/routing.md, mass 0.8 chosen on validation). Rows sum to sqrt(m), not 1.

        Raises:
            InvalidParameterError: ``mass`` outside [0, 1] or malformed embeddings.
        """
        if not 0.0 <= mass <= 1.0:
            raise InvalidParameterError(f"mass must be between 0 and 1, got {mass!r}")
        return nucleus_weights(self.probabilities(query_embeddings), mass)
