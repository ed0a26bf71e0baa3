"""Per-task linear heads for the secondary protocol (a classifier on the pooled embedding).

A head is two passthrough tensors carried in the adapter, ``heads.<task>.weight`` ``(C, hidden)``
and ``heads.<task>.bias`` ``(C,)``, saved in ``adapter_model.safetensors`` as PEFT saves
``modules_to_save`` tensors (PEFT ignores them when it loads the LoRA). Keys are per task
(``adapterhub.lora.keys.head_keys``), so a merge of several task adapters can carry every task's
head side by side.

Heads here are fitted on *frozen* embeddings (L2-regularised logistic regression, full-batch
L-BFGS: deterministic and about a second). Fitted on the base model's embeddings it is the
"head-only" baseline; fitted on an adapted model's embeddings it is that adapter's head.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F

from adapterhub.errors import InvalidParameterError
from adapterhub.lora.keys import head_keys

HEAD_L2 = 1e-4
"""L2 penalty on the head weight (per example, mean loss); small, only to keep L-BFGS bounded."""


def fit_linear_head(
    features: torch.Tensor, labels: torch.Tensor, num_classes: int, *, l2: float = HEAD_L2, max_iter: int = 300
) -> tuple[torch.Tensor, torch.Tensor]:
    """Multinomial logistic regression on fixed features.

    Args:
        features: ``(n, hidden)`` embeddings (unit norm here).
        labels: ``(n,)`` class indices.
        num_classes: ``C``.
        l2: weight penalty.
        max_iter: L-BFGS iterations.

    Returns:
        ``(weight (C, hidden), bias (C,))`` float32.
    """
    if features.ndim != 2 or labels.shape != (features.shape[0],):
        raise InvalidParameterError(f"features {tuple(features.shape)} and labels {tuple(labels.shape)} do not match")
    x = features.detach().float()
    y = labels.long()
    weight = torch.zeros(num_classes, x.shape[1], requires_grad=True)
    bias = torch.zeros(num_classes, requires_grad=True)
    opt = torch.optim.LBFGS(
        [weight, bias], lr=1.0, max_iter=max_iter, tolerance_grad=1e-6, line_search_fn="strong_wolfe"
    )

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = F.cross_entropy(x @ weight.T + bias, y) + l2 * weight.pow(2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    return weight.detach().clone(), bias.detach().clone()


def head_from_tensors(tensors: Mapping[str, torch.Tensor], task_name: str) -> tuple[torch.Tensor, torch.Tensor] | None:
    """The task's head from an adapter's passthrough tensors, or ``None`` if it carries none."""
    w_key, b_key = head_keys(task_name)
    if w_key in tensors and b_key in tensors:
        return tensors[w_key].float(), tensors[b_key].float()
    return None
