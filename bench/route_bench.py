"""Routing speed, each figure beside its reference run in the same process (issue 10, "Speed").

Run:  .venv/bin/python bench/route_bench.py [--adapters 1000] [--queries 2000] [--threads 1]

1. **Routing decision per query** for N adapters (prototype router: cosine to each adapter's
   prototype, top-k softmax), excluding the one encoder pass, one query at a time on one core:
   adapterhub's ``PrototypeRouter.route`` vs scikit-learn's ``NearestNeighbors(metric="cosine",
   algorithm="brute").kneighbors`` (the same top-k search, no weights). Goal: < 1 ms median.
2. **Arrow prototype build** per adapter (MiniLM-shaped, 48 modules of rank 8; and one
   Llama-7B-shaped 4096x4096 rank-16 module): adapterhub's factor-space top singular vector vs a
   dense ``torch.linalg.svd`` of each ΔW (what a naive build does) and vs PEFT's Arrow build
   (15 power iterations on the dense ΔW).
3. **Batched mixture forward** on MiniLM with the 7 shipped adapters, a batch of 32 texts:
   32 rows with 32 different mixtures in one pass (adapterhub's per-example weights) vs 32
   separate single-adapter passes vs PEFT's mixed-batch inference (``adapter_names=``, one adapter
   per row, the closest thing PEFT offers).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from adapterhub.eval.library import library_dir, load_library  # noqa: E402
from adapterhub.lora import LoraAdapter, LoraModule  # noqa: E402
from adapterhub.models import cached_base_model, lora_attached  # noqa: E402
from adapterhub.route.arrow import arrow_prototypes, top_right_singular_vector  # noqa: E402
from adapterhub.route.prototype import PrototypeRouter  # noqa: E402


def timed(fn: Callable[[], object], repeats: int) -> list[float]:
    """Wall seconds of each of ``repeats`` calls (after one warm-up call)."""
    fn()
    out = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        out.append(time.perf_counter() - start)
    return out


def decision(n_adapters: int, n_queries: int, top_k: int) -> dict[str, float]:
    from sklearn.neighbors import NearestNeighbors

    g = torch.Generator().manual_seed(0)
    protos = torch.nn.functional.normalize(torch.randn(n_adapters, 384, generator=g), dim=-1)
    queries = torch.nn.functional.normalize(torch.randn(n_queries, 384, generator=g), dim=-1)
    router = PrototypeRouter({f"a/{i}": protos[i] for i in range(n_adapters)})
    ours = [t for q in queries.split(1) for t in timed(lambda q=q: router.route(q, top_k=top_k, temperature=0.1), 1)]
    knn = NearestNeighbors(n_neighbors=top_k, metric="cosine", algorithm="brute").fit(protos.numpy())
    ref = [t for q in queries.numpy()[:, None, :] for t in timed(lambda q=q: knn.kneighbors(q), 1)]
    # same choice: the top-k sets agree (ties aside)
    w = router.route(queries[:50], top_k=top_k, temperature=0.1)
    _, idx = knn.kneighbors(queries[:50].numpy())
    agree = sum(set(torch.nonzero(w[i]).flatten().tolist()) == set(idx[i].tolist()) for i in range(50)) / 50
    return {"ours_ms": statistics.median(ours) * 1e3, "sklearn_ms": statistics.median(ref) * 1e3, "same_top_k": agree}


def _peft_power_iteration(delta: torch.Tensor, steps: int = 15) -> torch.Tensor:
    """PEFT Arrow's prototype: power iteration on ΔWᵀΔW from a random start (its documented recipe)."""
    v = torch.randn(delta.shape[1])
    for _ in range(steps):
        v = delta.T @ (delta @ v)
        v = v / v.norm()
    return v


def arrow_build(repeats: int) -> dict[str, float]:
    adapter = load_library()["wn_pos"][0]
    modules = [m for _, m in adapter.modules()]
    ours = timed(lambda: arrow_prototypes(adapter), repeats)
    dense = timed(lambda: [torch.linalg.svd(m.delta(), full_matrices=False) for m in modules], repeats)
    peft = timed(lambda: [_peft_power_iteration(m.delta()) for m in modules], repeats)
    g = torch.Generator().manual_seed(1)
    big = LoraModule(torch.randn(16, 4096, generator=g) / 64, torch.randn(4096, 16, generator=g) / 4, 2.0)
    big_ours = timed(lambda: top_right_singular_vector(big), repeats)
    big_peft = timed(lambda: _peft_power_iteration(big.delta()), max(1, repeats // 3))
    return {
        "minilm_adapter_ms": statistics.median(ours) * 1e3,
        "minilm_dense_svd_ms": statistics.median(dense) * 1e3,
        "minilm_peft_power_ms": statistics.median(peft) * 1e3,
        "llama_module_ms": statistics.median(big_ours) * 1e3,
        "llama_module_peft_power_ms": statistics.median(big_peft) * 1e3,
    }


def mixed_forward(repeats: int) -> dict[str, float]:
    from peft import PeftModel

    model = cached_base_model()
    library = load_library()
    names = sorted(library)
    adapters: list[LoraAdapter] = [library[n][0] for n in names]
    texts = [f"example text number {i} about a small brown bird" for i in range(32)]
    batch = model.tokenize(texts)
    g = torch.Generator().manual_seed(2)
    mixtures = torch.softmax(torch.randn(32, len(adapters), generator=g) * 3, dim=-1)  # 32 different rows

    with lora_attached(model.model, adapters):
        from adapterhub.models import set_mixture_weights

        def ours() -> None:
            set_mixture_weights(model.model, mixtures)
            with torch.no_grad():
                model.model(**batch)

        t_ours = timed(ours, repeats)

    def separate() -> None:
        for i in range(32):
            row = {k: v[i : i + 1] for k, v in batch.items()}
            with lora_attached(model.model, [adapters[i % len(adapters)]]), torch.no_grad():
                model.model(**row)

    t_separate = timed(separate, max(1, repeats // 3))
    from transformers import AutoModel

    from adapterhub.models.base import default_model_path

    base = AutoModel.from_pretrained(str(default_model_path()))
    peft_model = PeftModel.from_pretrained(base, str(library_dir() / names[0]), adapter_name=names[0])
    for n in names[1:]:
        peft_model.load_adapter(str(library_dir() / n), adapter_name=n)
    peft_model.eval()
    row_names = [names[i % len(names)] for i in range(32)]

    def peft_mixed() -> None:
        with torch.no_grad():
            peft_model(**batch, adapter_names=row_names)

    t_peft = timed(peft_mixed, repeats)
    return {
        "ours_32_mixtures_ms": statistics.median(t_ours) * 1e3,
        "separate_32_passes_ms": statistics.median(t_separate) * 1e3,
        "peft_adapter_names_ms": statistics.median(t_peft) * 1e3,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--adapters", type=int, default=1000)
    parser.add_argument("--queries", type=int, default=2000)
    parser.add_argument("--top-k", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    d = decision(args.adapters, args.queries, args.top_k)
    print(f"routing decision, {args.adapters} adapters, one query at a time, {args.threads} thread(s):")
    print(f"  prototype router {d['ours_ms']:.3f} ms median   scikit-learn kneighbors {d['sklearn_ms']:.3f} ms"
          f"   ratio sklearn/ours {d['sklearn_ms'] / d['ours_ms']:.1f}x   same top-k {d['same_top_k']:.0%}"
          f"   goal < 1 ms: {'met' if d['ours_ms'] < 1 else 'NOT met'}")
    a = arrow_build(args.repeats)
    print("Arrow prototype build:")
    print(f"  MiniLM adapter (48 modules, r=8): {a['minilm_adapter_ms']:.2f} ms   dense SVD {a['minilm_dense_svd_ms']:.1f} ms"
          f" ({a['minilm_dense_svd_ms'] / a['minilm_adapter_ms']:.0f}x)   PEFT power iteration {a['minilm_peft_power_ms']:.1f} ms"
          f" ({a['minilm_peft_power_ms'] / a['minilm_adapter_ms']:.0f}x)")
    print(f"  Llama 4096x4096 r=16 module: {a['llama_module_ms']:.2f} ms   PEFT power iteration"
          f" {a['llama_module_peft_power_ms']:.1f} ms ({a['llama_module_peft_power_ms'] / a['llama_module_ms']:.0f}x)")
    m = mixed_forward(args.repeats)
    print("MiniLM forward, batch of 32, 7 adapters:")
    print(f"  32 different mixtures, one pass {m['ours_32_mixtures_ms']:.1f} ms   32 single-adapter passes"
          f" {m['separate_32_passes_ms']:.1f} ms ({m['separate_32_passes_ms'] / m['ours_32_mixtures_ms']:.1f}x)"
          f"   PEFT adapter_names= (one adapter per row) {m['peft_adapter_names_ms']:.1f} ms"
          f" ({m['peft_adapter_names_ms'] / m['ours_32_mixtures_ms']:.2f}x)")


if __name__ == "__main__":
    main()
