"""Input statistics of adapted layers: the Gram matrix ``X^T X`` of every LoRA module's inputs.

RegMean (``adapterhub.merge.regmean``) merges each linear module by least squares over what that
module sees when its own adapter runs on its own data. Those inputs are only known by running the
model: this module attaches one adapter, runs it over a few tokenized examples (an adapter's stored
examples, at most 32 texts) and accumulates, per adapted module, ``G = sum_tokens x x^T`` in
float64. Each text runs alone, so no padding token enters a Gram and no attention mask is needed.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import torch
from torch import nn

from adapterhub.lora import LoraAdapter
from adapterhub.models.lora_layers import lora_attached, lora_layers


@torch.no_grad()
def input_grams(
    model: nn.Module, adapter: LoraAdapter, inputs: Iterable[Mapping[str, torch.Tensor]]
) -> dict[str, torch.Tensor]:
    """Module path -> ``X^T X`` (``d_in x d_in``, float64) of each module ``adapter`` adapts, with
    ``adapter`` attached and ``model(**batch)`` run on each of ``inputs`` (one text per batch).

    The model leaves as it came (``lora_attached`` restores it). Modules the adapter does not
    adapt are not measured.
    """
    wanted = set(adapter.module_paths)
    grams: dict[str, torch.Tensor] = {}
    hooks = []

    def recorder(path: str):  # type: ignore[no-untyped-def]
        def hook(module: nn.Module, args: tuple[torch.Tensor, ...]) -> None:
            x = args[0].detach().reshape(-1, args[0].shape[-1]).double()
            gram = x.T @ x
            grams[path] = grams[path] + gram if path in grams else gram

        return hook

    was_training = model.training
    model.eval()
    try:
        with lora_attached(model, [adapter]):
            for path, layer in lora_layers(model):
                if path in wanted:
                    hooks.append(layer.register_forward_pre_hook(recorder(path)))
            for batch in inputs:
                model(**batch)
    finally:
        for handle in hooks:
            handle.remove()
        model.train(was_training)
    return grams
