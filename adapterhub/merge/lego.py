r"""LoRA-LEGO: merge LoRAs by clustering their rank-one units.

Zhao et al., "Merging LoRAs like Playing LEGO: Pushing the Modularity of LoRA to Extremes Through
Rank-Wise Clustering", ICLR 2025 (https://arxiv.org/abs/2409.16167). The paper describes the
steps but publishes no exact formulas for canonicalisation or reweighting; the ones below are
ours, chosen for the reasons given, and each is a parameter where a choice exists.

For one module, with inputs ``i`` (weight ``w_i``, scale ``s_i``, factors ``A_i``, ``B_i``):

1. **Minimal Semantic Units.** Rank ``j`` of input ``i`` is the pair ``(a, b) = (A_i[j, :],
   w_i s_i B_i[:, j])``; its contribution is the rank-one matrix ``b a^T`` and
   ``sum_units b a^T = sum_i w_i s_i B_i A_i`` exactly. A unit with ``a = 0`` or ``b = 0``
   contributes nothing and is dropped (counted as ``null_units``).

2. **Canonicalisation.** ``(a, b)`` is only defined up to ``(c a, b / c)``, and ``(a, b)`` and
   ``(-a, -b)`` are the same unit. *Balance*: rescale so ``||a|| = ||b|| = sqrt(m)`` where
   ``m = ||a|| ||b|| = ||b a^T||_F`` is the unit's magnitude; without this, a factor's norm would
   depend on the training's init scale and the clustering would compare arbitrary gauges.
   *Sign*: flip both so that the entry of largest magnitude of ``concat(a, b)`` is positive
   (first such entry on ties). For a generic vector that entry is well separated from the rest,
   so near-identical units get the same sign, whereas "sum of a positive" flips when the sum is
   near zero, which it is for high-dimensional factors. The clustering below is in any case
   exactly sign-invariant; the canonical sign only makes the stored representation, and so the
   output, deterministic.

3. **Clustering.** Feature: the *direction* ``x = concat(a/||a||, b/||b||) / sqrt(2)`` (unit
   norm, each factor counting half), weighted by the unit's magnitude ``m``. Directions, because
   a unit's meaning is its direction while its magnitude is its strength: two units pointing the
   same way at different strengths should merge, and plain Euclidean k-means on raw factors would
   instead lump all weak units together near the origin whatever they point at. Magnitude weights,
   because a cluster centre should follow the units that carry most of the delta. Distance:
   ``d(x, mu) = min(||x - mu||^2, ||-x - mu||^2)``, the distance between sign classes, so ``x``
   and ``-x`` are the same point. ``cluster="kmeans"``: weighted k-means (Lloyd) with k-means++
   seeding under that distance, run entirely on the ``N x N`` Gram matrix of the directions (N =
   total rank, e.g. 128), ``restarts`` seeded restarts, lowest weighted inertia kept.
   ``cluster="kmedoids"``: FasterPAM (``kmedoids`` package) on the chord distance
   ``sqrt(2 - 2|cos|)`` (a metric on sign classes; unweighted, as FasterPAM takes no weights).
   Units are sorted by magnitude before clustering and clusters are ordered by their final norm,
   so permuting the inputs or the ranks inside an input does not change the result.

4. **Centroids.** Each cluster becomes one rank of the output: ``a_c`` is the mean of its
   members' sign-aligned balanced ``a``'s and ``b_c`` the mean of their ``b``'s (the paper's
   centroid). When ``k >= N`` every unit is its own cluster and the sum of the centroids is the
   exact weighted sum ``sum_i w_i s_i B_i A_i``.

5. **Parameter reweighting** (``param_reweight=True``). Averaging units that point in different
   directions shrinks the centroid: ``||mean b|| ||mean a|| <= mean(m_j)``. We rescale ``a_c`` and
   ``b_c`` by the same factor so that ``||b_c a_c^T||_F = mean_j m_j``, the mean magnitude of the
   cluster's members. The *mean*, not the sum: a cluster stands for one shared direction that its
   members agree on, and fitting it to the members' summed contribution would rebuild the plain
   sum of all adapters cluster by cluster (every cluster grows with its size), the trap that
   over-scales the merge badly.

6. **Output reweighting** (``output_reweight``), one scalar per module applied to both factors:
   with ``w_hat_i = w_i / mean_j |w_j|`` (the weights as *relative* proportions; the default
   ``1/n`` gives ``w_hat_i = 1``) and ``Delta_i = s_i B_i A_i``, the merged delta ``M`` is scaled to

   * ``"mean"`` (default, ``DEFAULT_OUTPUT_REWEIGHT``): ``||M||_F = (1/n) sum_i ||w_hat_i Delta_i||_F``,
     the mean norm of the inputs: the merge perturbs the base model as strongly as one average
     input does, whatever ``n``. For ``n`` nearly orthogonal task deltas of equal norm ``D`` the
     exact sum has norm ``sqrt(n) D`` and the exact average ``D / sqrt(n)``, so ``"mean"`` sits at
     their geometric middle, the scale of task arithmetic with weights ``1/sqrt(n)``. Merging an
     adapter with itself gives it back (``lego(a, a) = a``).
   * ``"norm"``: ``||M||_F = ||sum_i w_hat_i Delta_i||_F``, the norm of the exact
     (relative-)weighted sum, i.e. of the plain *sum* for the default weights: ``sqrt(n) D`` for
     orthogonal deltas, growing without bound with ``n``. With ``k >= N`` it reproduces
     ``sum_i w_hat_i Delta_i`` exactly; ``lego(a, a) = 2a``; deltas that cancel give a small merge.
   * ``"sum"``: ``||M||_F = sum_i ||w_hat_i Delta_i||_F`` (``n D``), stronger still.
   * ``"none"``: no rescale; the weights are then absolute: with ``k >= N`` and
     ``param_reweight`` on, ``M = sum_i w_i s_i B_i A_i`` exactly (the default weights ``1/n``
     give the average).

   Under ``"norm"``, ``"mean"`` and ``"sum"`` multiplying all weights by a constant changes nothing.

7. **Cancellation cap.** Clustering aligns unit signs, so inputs that cancel (``a`` and a copy of
   ``a`` with weights 0.5 and -0.5) still give full-strength centroids, and ``"mean"``/``"sum"``
   would scale them to one input's norm: a full-strength adapter where the weighted sum is zero.
   The target is therefore capped at ``sqrt(n) ||sum_i w_hat_i Delta_i||_F``. For ``n`` orthogonal
   inputs of equal norm the strongest mode (``"sum"``, ``n D``) meets the cap exactly and
   ``"mean"`` (``D``) is far below it, so the cap only bites where inputs cancel; an exact
   cancellation gives a zero merge. (``"none"`` takes the weights as absolute and is not capped;
   the report flags cancelled modules whatever the method.)
   All targets are computed in factor space (``r x r`` Grams), never from dense deltas.

   Why ``"mean"`` is the default (picked on the *validation* split of the shipped task library,
   7 rank-8 MiniLM adapters, ``docs/merge_quality.md``; the test split was not read): at k = 8 the
   mean normalised accuracy (merged / own adapter) was, for ``"norm"`` / ``"mean"``: pairs of tasks
   (3 fixed pairs) 0.996 / 0.980, groups of four (2 fixed) 0.947 / 0.943, all seven tasks (3 seeds)
   0.828 / 0.897 (``"sum"``: 0.414); at k = 4 and 16 on all seven 0.805 / 0.873 and 0.834 / 0.900.
   Averaged over the three group sizes ``"mean"`` wins (0.940 vs 0.924), and the trend decides it
   for a catalog: ``"norm"``'s perturbation grows like ``sqrt(n)`` and already costs 7 points at
   seven adapters, while ``"mean"`` stays one adapter's worth. (The
   previous default was ``"norm"``; its rationale, "each task keeps the strength it has in the
   plain sum", holds for two or three adapters and fails beyond.) The paper motivates output
   reweighting by "variance expansion" (the merged update's output scale drifting from the
   inputs'); ``"mean"`` is the reading of it that keeps the inputs' scale.
   Why not the root-sum-square of the inputs' norms, which equals ``sqrt(n) D`` for orthogonal
   deltas? It ignores how the inputs relate, and it has ``"norm"``'s growth with ``n``.

**What to expect from independently trained task LoRAs.** LoRA-LEGO assumes that different LoRAs
share rank-one "semantic units" worth averaging. Task adapters trained from the same init (the
shipped library: every adapter starts from seed 0, as PEFT users who fix a seed do) share only
their ``A`` rows (|cos| about 0.65-0.9 rank by rank after training), while their ``B`` columns,
the task-specific part, are unrelated (|cos| about 0.05). So k-means finds the init's rank slots:
at k = r every cluster holds one unit of every adapter (``mixing_share`` about 0.95,
``a_cohesion`` high, ``b_cohesion`` near ``1/sqrt(n)``), and each centroid is, up to scale, the
sum of the adapters' ``b``'s on the shared ``a`` -- a rank-k approximation of the weighted sum that
is never better, in Frobenius norm, than the truncated SVD of the same sum (Eckart-Young). On the
shipped library LEGO therefore ties with or trails ``svd`` at equal rank and equal output scale
(``svd`` with weights ``1/sqrt(n)``); see ``docs/merge_quality.md``. Replacing the centroid by the
best rank-one fit of each cluster's summed units, without parameter reweighting (tried on
validation: +0.005 mean normalised accuracy over 14 settings, which closes most of LEGO's 0.007 gap
to ``svd``), does not turn the tie into a win: the partition, not the centroid, is what differs
from the SVD's subspace. It is not adopted here because it replaces the paper's centroid and needs
parameter reweighting off. LEGO can only win where adapters do share units (e.g.
adapters fine-tuned from one another, or from a common multi-task LoRA).

The report gives, per module, the share of clusters that hold units of more than one input
(``mixing_share``): near 0 means LEGO kept the adapters apart (it then behaves like a
concatenation pruned to k ranks), near 1 means it found shared directions and averaged them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch

from adapterhub.errors import InvalidParameterError
from adapterhub.merge.base import ModuleContext, ModuleMerge, Term
from adapterhub.merge.factors import fro_norm, stack_terms

ClusterMethod = Literal["kmeans", "kmedoids"]
OutputReweight = Literal["norm", "mean", "sum", "none"]

DEFAULT_OUTPUT_REWEIGHT: OutputReweight = "mean"
"""The output reweighting picked on the validation split (module docstring, step 6)."""


@dataclass(frozen=True)
class Units:
    """The canonical units of one module, sorted by magnitude (descending).

    Attributes:
        a: ``(N, d_in)`` balanced, sign-canonical rows of A.
        b: ``(N, d_out)`` balanced, sign-canonical columns of ``w s B`` (as rows).
        magnitude: ``(N,)`` float64, ``||b a^T||_F``.
        source: ``(N,)`` index of the input each unit came from.
        null: number of zero units dropped.
    """

    a: torch.Tensor
    b: torch.Tensor
    magnitude: torch.Tensor
    source: torch.Tensor
    null: int

    @property
    def count(self) -> int:
        return int(self.magnitude.numel())


def canonical_units(terms: list[Term]) -> Units:
    """Split every input into balanced, sign-fixed rank-one units (steps 1-2 of the module doc).

    Written to hold at most two copies of the stacked factors: the balancing scale and the sign
    are per-row scalars, found before any row is rescaled (a positive row scale moves no argmax).
    """
    a = torch.cat([t.module.A.float() for t in terms])
    b = torch.cat([(t.module.B.float() * t.coeff).T for t in terms])
    source = torch.cat([torch.full((t.module.rank,), t.index, dtype=torch.long) for t in terms])
    na = torch.linalg.vector_norm(a, dim=1)
    nb = torch.linalg.vector_norm(b, dim=1)
    keep = (na > 0) & (nb > 0)
    scale_a = torch.where(keep, (nb / na.clamp_min(1e-30)).sqrt(), torch.zeros_like(na))
    scale_b = torch.where(keep, (na / nb.clamp_min(1e-30)).sqrt(), torch.zeros_like(nb))
    # sign: the largest-|.| entry of the balanced concat(a, b) is made positive (a positive value
    # wins an exact tie between +v and -v, a measure-zero case the clustering ignores anyway)
    lead_a = _extreme(a) * scale_a
    lead_b = _extreme(b) * scale_b
    lead = torch.where(lead_a.abs() >= lead_b.abs(), lead_a, lead_b)
    flip = torch.where(lead < 0, -1.0, 1.0)
    magnitude = na.double() * nb.double()
    kept = torch.nonzero(keep).squeeze(1)
    order = kept[torch.sort(magnitude[kept], descending=True, stable=True).indices]
    a_out = a[order].mul_((flip * scale_a)[order, None])
    del a
    b_out = b[order].mul_((flip * scale_b)[order, None])
    return Units(a=a_out, b=b_out, magnitude=magnitude[order], source=source[order], null=int((~keep).sum()))


def _extreme(x: torch.Tensor) -> torch.Tensor:
    """Per row, the entry of largest magnitude (positive on a +v/-v tie), without an ``abs`` copy."""
    high = x.max(dim=1).values
    low = x.min(dim=1).values
    return torch.where(high >= -low, high, low)


def direction_gram(units: Units) -> torch.Tensor:
    """``G[p, q] = <x_p, x_q>`` for the unit directions ``x = concat(a/|a|, b/|b|)/sqrt(2)``.

    Computed in float32 (the ``N x (d_in + d_out)`` product dominates LEGO's cost; cosines are
    good to ~1e-7, far below any clustering decision) and returned as float64.
    """
    a = units.a / torch.linalg.vector_norm(units.a, dim=1, keepdim=True)
    b = units.b / torch.linalg.vector_norm(units.b, dim=1, keepdim=True)
    return (0.5 * (a @ a.T + b @ b.T)).double().clamp(-1.0, 1.0)


def _sign(x: torch.Tensor) -> torch.Tensor:
    return torch.where(x < 0, -1.0, 1.0).to(torch.float64)


def _kmeanspp(G: torch.Tensor, w: torch.Tensor, k: int, generator: torch.Generator) -> list[int]:
    """k-means++ seeding under the sign-class distance ``2 - 2|cos|`` with magnitude weights."""
    n = G.shape[0]
    first = int(torch.multinomial(w / w.sum(), 1, generator=generator))
    centers = [first]
    closest = (2.0 - 2.0 * G[first].abs()).clamp_min(0)
    for _ in range(1, k):
        score = w * closest
        score[centers] = 0.0
        if float(score.sum()) <= 0:  # fewer distinct directions than k: take the heaviest unused
            unused = torch.ones(n, dtype=torch.bool)
            unused[centers] = False
            pick = int(torch.nonzero(unused)[0])
        else:
            pick = int(torch.multinomial(score / score.sum(), 1, generator=generator))
        centers.append(pick)
        closest = torch.minimum(closest, (2.0 - 2.0 * G[pick].abs()).clamp_min(0))
    return centers


def _lloyd(
    G: torch.Tensor, w: torch.Tensor, labels: torch.Tensor, signs: torch.Tensor, k: int, max_iter: int
) -> tuple[torch.Tensor, torch.Tensor, float]:
    """Weighted, sign-invariant Lloyd iterations in kernel form.

    Centroid ``mu_c = sum_{j in c} w_j s_j x_j / W_c``; ``<x_p, mu_c>`` and ``||mu_c||^2`` come from
    ``G``, and ``d(x_p, mu_c) = 1 + ||mu_c||^2 - 2 |<x_p, mu_c>|`` (both signs of ``x_p`` tried).
    """
    n = G.shape[0]
    rows = torch.arange(n)
    dist = torch.zeros(n, k, dtype=torch.float64)
    for _ in range(max_iter):
        member = torch.zeros(n, k, dtype=torch.float64)
        member[rows, labels] = 1.0
        total = (member * w[:, None]).sum(dim=0)
        M = member * (w * signs)[:, None] / total.clamp_min(1e-300)
        proj = G @ M
        mu_sq = (M * proj).sum(dim=0)
        dist = (1.0 + mu_sq - 2.0 * proj.abs()).clamp_min(0)
        dist[:, total == 0] = math.inf
        new_labels = dist.argmin(dim=1)
        new_labels = _fill_empty(new_labels, dist, w, k)
        new_signs = _sign(proj[rows, new_labels])
        if torch.equal(new_labels, labels) and torch.equal(new_signs, signs):
            break
        labels, signs = new_labels, new_signs
    inertia = float((w * dist[rows, labels].nan_to_num(posinf=4.0)).sum())
    return labels, signs, inertia


def _fill_empty(labels: torch.Tensor, dist: torch.Tensor, w: torch.Tensor, k: int) -> torch.Tensor:
    """Give every empty cluster the unit that its own centroid explains worst (from a cluster
    with more than one member), the usual fix that keeps exactly k clusters."""
    labels = labels.clone()
    rows = torch.arange(labels.numel())
    for c in range(k):
        counts = torch.bincount(labels, minlength=k)
        if counts[c] > 0:
            continue
        cost = (w * dist[rows, labels].nan_to_num(posinf=4.0)).clone()
        cost[counts[labels] <= 1] = -1.0
        labels[int(cost.argmax())] = c
    return labels


def kmeans_signed(
    G: torch.Tensor, w: torch.Tensor, k: int, *, generator: torch.Generator, restarts: int, max_iter: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Cluster ``N`` unit directions (Gram ``G``, weights ``w``) into ``k < N`` sign-invariant
    groups. Returns ``(labels, signs)``: unit ``p`` enters cluster ``labels[p]`` as ``signs[p] x_p``."""
    best: tuple[float, torch.Tensor, torch.Tensor] | None = None
    rows = torch.arange(G.shape[0])
    for _ in range(restarts):
        centers = _kmeanspp(G, w, k, generator)
        sim = G[:, centers]
        labels = (2.0 - 2.0 * sim.abs()).argmin(dim=1)
        labels[centers] = torch.arange(k)  # a centre always starts in its own cluster
        signs = _sign(sim[rows, labels])
        labels, signs, inertia = _lloyd(G, w, labels, signs, k, max_iter)
        if best is None or inertia < best[0] - 1e-12:
            best = (inertia, labels, signs)
    assert best is not None
    return best[1], best[2]


def kmedoids_signed(
    G: torch.Tensor, k: int, *, generator: torch.Generator, restarts: int, max_iter: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """FasterPAM on the chord distance between sign classes; signs align members to their medoid."""
    try:
        import kmedoids
    except ImportError:  # an optional dependency: only this clustering needs it
        raise InvalidParameterError(
            "cluster='kmedoids' needs the kmedoids package (pip install kmedoids); or use cluster='kmeans'"
        ) from None

    diss = (2.0 - 2.0 * G.abs()).clamp_min(0).sqrt().numpy().astype(np.float64)
    best = None
    for _ in range(restarts):
        state = int(torch.randint(0, 2**31 - 1, (1,), generator=generator))
        result = kmedoids.fasterpam(diss, k, max_iter=max_iter, init="random", random_state=state, n_cpu=1)
        if best is None or result.loss < best.loss - 1e-12:
            best = result
    assert best is not None
    labels = torch.as_tensor(np.asarray(best.labels), dtype=torch.long)
    medoids = torch.as_tensor(np.asarray(best.medoids), dtype=torch.long)
    signs = _sign(G[torch.arange(G.shape[0]), medoids[labels]])
    return labels, signs


def lego_module(
    terms: list[Term],
    ctx: ModuleContext,
    *,
    k: int,
    cluster: ClusterMethod = "kmeans",
    restarts: int = 4,
    max_iter: int = 100,
    param_reweight: bool = True,
    output_reweight: OutputReweight = DEFAULT_OUTPUT_REWEIGHT,
) -> ModuleMerge:
    """Merge one module with LoRA-LEGO (see the module docstring for every formula).

    Returns:
        Factors of rank ``min(k, N)`` (N = non-null units) and stats ``clusters``,
        ``mixed_clusters``, ``mixing_share``, ``units``, ``null_units``, ``output_scale``.
    """
    units = canonical_units(terms)
    d_out, d_in = terms[0].module.d_out, terms[0].module.d_in
    n = units.count
    if n == 0:
        zero_b, zero_a = torch.zeros(d_out, 1), torch.zeros(1, d_in)
        return ModuleMerge(zero_b, zero_a, {"clusters": 0, "mixed_clusters": 0, "units": 0, "null_units": units.null})
    generator = ctx.generator()
    if k >= n:
        labels = torch.arange(n)
        signs = torch.ones(n, dtype=torch.float64)
        k_eff = n
    else:
        G = direction_gram(units)
        w = units.magnitude
        if cluster == "kmeans":
            labels, signs = kmeans_signed(G, w, k, generator=generator, restarts=restarts, max_iter=max_iter)
        else:
            labels, signs = kmedoids_signed(G, k, generator=generator, restarts=restarts, max_iter=max_iter)
        k_eff = k

    member = torch.zeros(k_eff, n, dtype=torch.float64)
    member[labels, torch.arange(n)] = 1.0
    size = member.sum(dim=1)
    live = size > 0
    member, size = member[live], size[live]
    mean_op = member * signs[None, :] / size[:, None]
    a_c = mean_op @ units.a.double()
    b_c = mean_op @ units.b.double()
    cohesion = _cohesion(units, member, size, a_c, b_c)
    if param_reweight:
        target = (member @ units.magnitude) / size
        current = torch.linalg.vector_norm(a_c, dim=1) * torch.linalg.vector_norm(b_c, dim=1)
        factor = torch.where(current > 0, (target / current.clamp_min(1e-300)).sqrt(), torch.ones_like(current))
        a_c, b_c = a_c * factor[:, None], b_c * factor[:, None]

    # deterministic order: clusters by norm, descending (ties by their first member in unit order)
    norms = torch.linalg.vector_norm(a_c, dim=1) * torch.linalg.vector_norm(b_c, dim=1)
    first = torch.argmax(member, dim=1).double()
    order = sorted(range(norms.numel()), key=lambda c: (-float(norms[c]), float(first[c])))
    a_c, b_c, member = a_c[order], b_c[order], member[order]

    B, A = b_c.T.float().contiguous(), a_c.float().contiguous()
    scale = _output_scale(terms, ctx, B, A, output_reweight)
    if scale != 1.0:
        root = math.sqrt(scale)
        B, A = B * root, A * root

    sources_per_cluster = [set(units.source[member[c] > 0].tolist()) for c in range(member.shape[0])]
    mixed = sum(1 for s in sources_per_cluster if len(s) > 1)
    clusters = member.shape[0]
    return ModuleMerge(
        B,
        A,
        {
            "clusters": clusters,
            "mixed_clusters": mixed,
            "mixing_share": mixed / clusters,
            "units": n,
            "null_units": units.null,
            "output_scale": scale,
            **cohesion,
        },
    )


def _cohesion(
    units: Units, member: torch.Tensor, size: torch.Tensor, a_c: torch.Tensor, b_c: torch.Tensor
) -> dict[str, float]:
    """How much the members of multi-unit clusters agree with their centroid, per factor.

    ``a_cohesion`` (``b_cohesion``): the magnitude-weighted mean ``|cos|`` between each member's
    ``a`` (``b``) and its cluster centroid's, over clusters of two or more units (none: no key).
    Near 1: the members share that factor's direction; near ``1/sqrt(size)``: unrelated directions
    were averaged (the centroid then keeps little of any member).
    """
    multi = size > 1
    if not bool(multi.any()):
        return {}
    weights = (member[multi] * units.magnitude[None, :]).sum(dim=0)  # (N,): magnitude of members of multi clusters
    owner = member[multi].argmax(dim=0)
    out = {}
    for key, x, c in (("a_cohesion", units.a, a_c), ("b_cohesion", units.b, b_c)):
        x = torch.nn.functional.normalize(x.double(), dim=1)
        centre = torch.nn.functional.normalize(c[multi], dim=1)
        cos = (x * centre[owner]).sum(dim=1).abs()
        out[key] = float((weights * cos).sum() / weights.sum())
    return out


def _output_scale(terms: list[Term], ctx: ModuleContext, B: torch.Tensor, A: torch.Tensor, mode: OutputReweight) -> float:
    """The scalar that brings ``||B A||_F`` to the output-reweighting target (step 6), never above
    ``sqrt(n)`` times the norm of the relative-weighted sum (step 7: what cancels stays cancelled)."""
    if mode == "none":
        return 1.0
    current = fro_norm(B, A)
    if current == 0:
        return 1.0
    unit = sum(abs(w) for w in ctx.weights) / len(ctx.weights)  # mean |w|: w_hat = w / unit
    sum_norm = (ctx.sum_norm if ctx.sum_norm is not None else fro_norm(*stack_terms(terms))) / unit
    if mode == "norm":
        target = sum_norm
    else:
        norms = sum(abs(t.coeff) * fro_norm(t.module.B.float(), t.module.A.float()) for t in terms) / unit
        target = norms if mode == "sum" else norms / ctx.n_inputs
        target = min(target, math.sqrt(ctx.n_inputs) * sum_norm)
    return target / current
