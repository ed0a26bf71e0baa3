"""Pack N synthetic Llama-7B-layer adapters into shared shard pools: time, peak memory, ratio.

Run:
    .venv/bin/python bench/shard_bench.py --n 100
    .venv/bin/python bench/shard_bench.py --n 1000 --pool-size 1024 --shards-per-vector 4

Each adapter is one Llama-7B decoder layer at rank 16: q, k, v, o (4096x4096), gate, up
(4096 -> 11008), down (11008 -> 4096); about 5 MB in fp16. The adapters share low-rank structure,
so pooling has something to find: per projection and side there are ``--atoms`` shared unit
vectors, and each rank vector of an adapter is a sparse random mix of 2 of them plus Gaussian noise
(``--noise``, relative to the signal).

How memory is bounded: adapters are generated lazily, one at a time, from a per-name seed (the
mapping passed to ``pack_library`` builds an adapter when it is read and keeps none), in fp16.
Packing keeps the canonical rank vectors of every adapter in the storage dtype (fp16: ~2.6 MB per
adapter, ~2.6 GB at N = 1000) and fits k-means on at most ``--max-fit-points`` shards per pool
(a seeded subsample; every shard is still assigned to its nearest centre). Peak RSS is
``resource.getrusage(RUSAGE_SELF).ru_maxrss``.
"""

from __future__ import annotations

import argparse
import json
import resource
import time
from collections.abc import Iterator, Mapping

import torch

from adapterhub.lora.adapter import LoraAdapter
from adapterhub.lora.module import LoraModule
from adapterhub.shard.pack import pack_library

SHAPES = {  # name: (d_out, d_in)
    "q_proj": (4096, 4096),
    "k_proj": (4096, 4096),
    "v_proj": (4096, 4096),
    "o_proj": (4096, 4096),
    "gate_proj": (11008, 4096),
    "up_proj": (11008, 4096),
    "down_proj": (4096, 11008),
}
RANK = 16


def _atoms(d: int, atoms: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    basis = torch.randn(atoms, d, generator=g)
    return basis / basis.norm(dim=1, keepdim=True)


class LazyLibrary(Mapping[str, LoraAdapter]):
    """name -> adapter, built on every read from the name's seed; nothing is kept."""

    def __init__(self, n: int, *, atoms: int, noise: float) -> None:
        self.names = [f"synthetic/a{i:04d}" for i in range(n)]
        self.noise = noise
        self.bases = {
            (kind, side): _atoms(d, atoms, seed=100 * j + (side == "A"))
            for j, (kind, (d_out, d_in)) in enumerate(SHAPES.items())
            for side, d in (("B", d_out), ("A", d_in))
        }

    def __getitem__(self, name: str) -> LoraAdapter:
        i = self.names.index(name)
        g = torch.Generator().manual_seed(1000 + i)
        modules = {}
        for kind, (d_out, d_in) in SHAPES.items():
            factors = {}
            for side, d in (("B", d_out), ("A", d_in)):
                basis = self.bases[(kind, side)]
                pick = torch.randint(0, basis.shape[0], (RANK, 2), generator=g)
                mix = torch.randn(RANK, 2, generator=g)
                vec = (basis[pick] * mix[:, :, None]).sum(1)
                vec += self.noise * torch.randn(RANK, d, generator=g) / d**0.5
                factors[side] = (vec * 0.05).half()
            modules[f"model.layers.0.self_attn.{kind}" if kind[0] in "qkvo" else f"model.layers.0.mlp.{kind}"] = LoraModule(
                A=factors["A"], B=factors["B"].T.contiguous(), scale=2.0
            )
        return LoraAdapter.from_modules(modules, base_model="meta-llama/Llama-2-7b-hf")

    def __iter__(self) -> Iterator[str]:
        return iter(self.names)

    def __len__(self) -> int:
        return len(self.names)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100, help="number of adapters (100, 1000)")
    parser.add_argument("--pool-size", type=int, default=1024)
    parser.add_argument("--shards-per-vector", type=int, default=4)
    parser.add_argument("--private-budget", type=float, default=0.0, help="bytes")
    parser.add_argument("--atoms", type=int, default=64)
    parser.add_argument("--noise", type=float, default=0.1)
    parser.add_argument("--max-fit-points", type=int, default=65536)
    parser.add_argument("--max-iter", type=int, default=10)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    library = LazyLibrary(args.n, atoms=args.atoms, noise=args.noise)
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    start = time.perf_counter()
    packed = pack_library(
        library, pool_size=args.pool_size, shards_per_vector=args.shards_per_vector,
        private_budget=args.private_budget, seed=0, dtype=torch.float16,
        max_iter=args.max_iter, max_fit_points=args.max_fit_points,
    )
    pack_s = time.perf_counter() - start
    start = time.perf_counter()
    packed.unpack(library.names[0])
    unpack_ms = (time.perf_counter() - start) * 1000
    stats = packed.stats()
    out = {
        "n": args.n,
        "pool_size": args.pool_size,
        "shards_per_vector": args.shards_per_vector,
        "private_budget": args.private_budget,
        "pack_s": round(pack_s, 2),
        "unpack_one_ms": round(unpack_ms, 1),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "rss_before_pack_mb": round(rss_before, 1),
        "unpacked_mb": round(stats.unpacked_bytes / 2**20, 1),
        "packed_mb": round(stats.total_packed_bytes / 2**20, 2),
        "ratio": round(stats.ratio, 2),
        "mean_rel_error": round(stats.mean_error, 4),
        "packed_bytes": stats.packed_bytes,
        "memory": "adapters generated lazily per name (fp16, none kept); canonical vectors kept in fp16; "
        f"k-means fit on <= {args.max_fit_points} shards per pool",
    }
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
