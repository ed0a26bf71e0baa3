"""Inference across many adapters: heterogeneous batches, an adapter cache, a request batcher.

- ``gathered``: one base forward pass where every row carries its own adapter mixture (the
  Punica/S-LoRA gathered-factor idea, with batched matmuls in torch);
- ``factors``: an adapter's factors in the form that kernel reads;
- ``cache``: those factors for recently used adapters under a byte budget (LRU, single-flight loads);
- ``batcher``: collects requests for a few milliseconds into one batch on one thread;
- ``encoder``: sentence embeddings on an encoder base; ``causal``: decoding on a causal LM.

Engines know nothing of SQL or HTTP: the service (``adapterhub.app.serving``) resolves names,
checks access and feeds them.
"""

from adapterhub.serving.batcher import Batcher, BatchStats
from adapterhub.serving.cache import AdapterCache
from adapterhub.serving.causal import CausalEngine, Generation, GenerationRow
from adapterhub.serving.factors import ServedAdapter, served_adapter
from adapterhub.serving.gathered import BatchPlan, GatheredLinear, Mixture, install_gathered, linear_layers

__all__ = [
    "AdapterCache",
    "BatchPlan",
    "BatchStats",
    "Batcher",
    "CausalEngine",
    "GatheredLinear",
    "Generation",
    "GenerationRow",
    "Mixture",
    "ServedAdapter",
    "install_gathered",
    "linear_layers",
    "served_adapter",
]
