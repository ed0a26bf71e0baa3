"""Canonical rank vectors, vector shards and a deterministic weighted k-means, for ``pack.py``.

Why canonicalise: a LoRA factorisation is not unique (``B A = (B M)(M^-1 A)`` for any invertible
``M``), so two adapters with the same update can have unrelated factors, and shards of raw factors
would cluster by accident of training, not by content. The SVD of the update is unique (up to the
sign of each pair, and rotations inside tied singular values): ``ΔW = Σ_i u_i v_iᵀ`` with
``u_i = sqrt(s_i)·U_i`` and ``v_i = sqrt(s_i)·V_i`` (norm balanced between the two sides, as
``merge.factors.balanced_split`` does) and the sign fixed so that the largest-magnitude entry of
``u_i`` is positive. It is computed in factor space (two tall-skinny QRs and an ``r x r`` SVD), never
a ``d x d`` matrix.

Why not ``merge.lego.kmeans_signed``: it runs on the ``N x N`` Gram matrix of all directions, fine
for a merge's 100 rank vectors, but a library has 10^4 to 10^6 shards. The k-means here works on
the points themselves in chunks: k-means++ seeding (batched: ``k/64`` centres per round, so seeding
costs about one Lloyd iteration instead of ``k`` sequential passes), then at most ``max_iter``
Lloyd iterations, all under one ``torch.Generator`` seed, so the same input gives the same pools.
"""

from __future__ import annotations

import math

import torch

from adapterhub.lora.module import LoraModule

_CHUNK = 8192  # points per distance block: 8192 x k floats at a time


def canonical_vectors(module: LoraModule) -> tuple[torch.Tensor, torch.Tensor]:
    """``(u, v)`` of shapes ``(r, d_out)`` and ``(r, d_in)`` (float64) with ``Σ_i u_i v_iᵀ == scale·B·A``.

    Rows are ordered by singular value (descending); each pair has ``||u_i|| == ||v_i|| == sqrt(s_i)``
    and the largest-magnitude entry of ``u_i`` positive, so equal updates give equal vectors.
    """
    B, A = module.folded()
    Qb, Rb = torch.linalg.qr(B.double())
    Qa, Ra = torch.linalg.qr(A.double().T)
    U, S, Vh = torch.linalg.svd(Rb @ Ra.T)
    root = S.clamp_min(0).sqrt()
    u = (Qb @ (U * root)).T
    v = (Qa @ (Vh.T * root)).T
    pivot = u.abs().argmax(dim=1, keepdim=True)
    sign = torch.sign(u.gather(1, pivot)).squeeze(1)
    sign[sign == 0] = 1.0
    return u * sign[:, None], v * sign[:, None]


def shard_length(d: int, shards_per_vector: int) -> int:
    return math.ceil(d / shards_per_vector)


def to_shards(vectors: torch.Tensor, shards_per_vector: int) -> torch.Tensor:
    """``(n, d)`` -> ``(n * l, ceil(d / l))``: each vector cut into ``l`` consecutive shards (zero-padded)."""
    n, d = vectors.shape
    dl = shard_length(d, shards_per_vector)
    pad = dl * shards_per_vector - d
    if pad:
        vectors = torch.nn.functional.pad(vectors, (0, pad))
    return vectors.reshape(n * shards_per_vector, dl)


def from_shards(shards: torch.Tensor, d: int, shards_per_vector: int) -> torch.Tensor:
    """Inverse of ``to_shards``: ``(n * l, dl)`` -> ``(n, d)``."""
    return shards.reshape(-1, shards.shape[1] * shards_per_vector)[:, :d]


def directions(shards: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Unit, sign-canonical directions of shards and their squared norms (the k-means weights).

    A shard and its negative are the same pool entry (the per-shard coefficient carries sign and
    magnitude), so directions are flipped to have their largest-magnitude entry positive. Zero shards
    get a zero direction and zero weight.
    """
    x = shards.float()
    norms = x.norm(dim=1)
    safe = torch.where(norms > 0, norms, torch.ones_like(norms))
    dirs = x / safe[:, None]
    pivot = dirs.abs().argmax(dim=1, keepdim=True)
    sign = torch.sign(dirs.gather(1, pivot))
    sign[sign == 0] = 1.0
    return dirs * sign, norms.square()


def nearest(points: torch.Tensor, centers: torch.Tensor) -> torch.Tensor:
    """Index of the nearest centre (squared Euclidean) of every point, in chunks."""
    c_sq = centers.square().sum(dim=1)
    out = torch.empty(points.shape[0], dtype=torch.long)
    for start in range(0, points.shape[0], _CHUNK):
        block = points[start : start + _CHUNK]
        dist = c_sq[None, :] - 2.0 * (block @ centers.T)  # + |x|^2, constant per row
        out[start : start + _CHUNK] = dist.argmin(dim=1)
    return out


def _min_dist(points: torch.Tensor, centers: torch.Tensor, p_sq: torch.Tensor) -> torch.Tensor:
    """Squared distance of every point to its nearest centre; ``p_sq``: the points' squared norms."""
    c_sq = centers.square().sum(dim=1)
    out = torch.empty(points.shape[0])
    for start in range(0, points.shape[0], _CHUNK):
        block = points[start : start + _CHUNK]
        dist = p_sq[start : start + _CHUNK, None] + c_sq[None, :] - 2.0 * (block @ centers.T)
        out[start : start + _CHUNK] = dist.min(dim=1).values.clamp_min(0)
    return out


def fit_sample(weights: torch.Tensor, max_fit_points: int, generator: torch.Generator) -> torch.Tensor:
    """Sorted indices of the points k-means fits on: those of positive weight, a seeded subsample of
    ``max_fit_points`` of them when there are more (the first draw of ``generator``)."""
    live = torch.nonzero(weights > 0).squeeze(1)
    if live.numel() > max_fit_points:
        live = live[torch.randperm(live.numel(), generator=generator)[:max_fit_points]].sort().values
    return live


def weighted_kmeans(
    points: torch.Tensor,
    weights: torch.Tensor,
    k: int,
    *,
    seed: int,
    max_iter: int = 20,
    max_fit_points: int = 65536,
) -> torch.Tensor:
    """``k`` centres (float32) minimising ``Σ_j w_j ||x_j - c(x_j)||²``, deterministic under ``seed``.

    Args:
        points: ``(n, d)`` float32.
        weights: ``(n,)`` non-negative (a shard's squared norm: its share of the update's energy).
        k: number of centres; at most the number of points with positive weight.
        seed: seeds the ``torch.Generator`` used for the subsample and the k-means++ draws.
        max_iter: Lloyd iterations at most (stops early when no label changes).
        max_fit_points: fit on a seeded subsample of at most this many points (bounds time and
            memory at 10^5+ shards; every point is still assigned to its nearest centre afterwards).
    """
    generator = torch.Generator().manual_seed(seed)
    live = fit_sample(weights, max_fit_points, generator)
    return kmeans_fit(points[live].float(), weights[live].double(), k, generator=generator, max_iter=max_iter)


def kmeans_fit(X: torch.Tensor, w: torch.Tensor, k: int, *, generator: torch.Generator, max_iter: int) -> torch.Tensor:
    """The fit of ``weighted_kmeans`` on its sample: ``X`` ``(n, d)`` float32, ``w`` ``(n,)`` float64 > 0.

    ``generator`` continues the one ``fit_sample`` drew from, so that split and whole give the same centres.
    """
    k = max(1, min(k, X.shape[0]))
    if X.shape[0] == 0:
        return torch.zeros(1, X.shape[1])
    p_sq = X.square().sum(dim=1)
    # k-means++ seeding, ``batch`` centres per round drawn with probability ~ w * D^2
    batch = max(1, math.ceil(k / 64))
    first = int(torch.multinomial(w, 1, generator=generator))
    chosen = [first]
    best = _min_dist(X, X[[first]], p_sq).double()
    while len(chosen) < k:
        prob = w * best
        if float(prob.sum()) <= 0:  # every point is already a centre: take unused ones in order
            taken = set(chosen)
            chosen += [i for i in range(X.shape[0]) if i not in taken][: k - len(chosen)]
            break
        take = min(batch, k - len(chosen), int((prob > 0).sum()))
        new = torch.multinomial(prob, take, replacement=False, generator=generator).tolist()
        chosen += new
        best = torch.minimum(best, _min_dist(X, X[new], p_sq).double())
    centers = X[chosen].clone()
    labels = None
    wf = w.float()
    Xw = X * wf[:, None]
    for _ in range(max_iter):
        new_labels = nearest(X, centers)
        if labels is not None and torch.equal(new_labels, labels):
            break
        labels = new_labels
        sums = torch.zeros_like(centers).index_add_(0, labels, Xw)
        mass = torch.zeros(k).index_add_(0, labels, wf)
        filled = mass > 0
        centers[filled] = sums[filled] / mass[filled, None]  # empty clusters keep their centre
    return centers
