"""The real Trans-LoRA pipeline on the real bases: MiniLM library adapter → all-mpnet-base-v2, SmolLM2 generating.

Small sizes (a few dozen inputs) so it runs in about a minute on two cores; the quality study is
``scripts/transfer_study.py`` (``docs/transfer.md``). What must hold even at this size:
- the discriminator, trained on real inputs against SmolLM2's imitations, tells held-out real test
  inputs from fresh samples better than chance;
- the student fits its teacher: on the synthetic set it was distilled on, MPNet + the new LoRA
  agrees with MiniLM + the source LoRA far more often than MPNet alone does.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

pytestmark = pytest.mark.slow

TASK = "wn_adj_kind"
REPO_ROOT = Path(__file__).resolve().parents[2]


def _agreement(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.argmax(-1) == b.argmax(-1)).float().mean())


def test_minilm_adapter_moves_to_mpnet_and_fits_its_teacher():
    from adapterhub.lora import LoraAdapter
    from adapterhub.models.base import cached_base_model
    from adapterhub.models.causal import cached_smollm2
    from adapterhub.models.mpnet import MPNET_ID, MPNET_TARGET_MODULES, cached_mpnet
    from adapterhub.tasks import load_task
    from adapterhub.transfer import (
        TransferConfig,
        p_real,
        prepare_source,
        sample_candidates,
        teacher_probs,
        transfer_adapter,
    )

    task = load_task(TASK)
    minilm, mpnet, lm = cached_base_model(), cached_mpnet(), cached_smollm2()
    source = LoraAdapter.load(REPO_ROOT / "examples" / TASK)
    kit = prepare_source(task, task.texts("train"), generator=lm, discriminator_base=minilm, max_real=48, seed=0)

    real_test = task.texts("test")[:40]
    fresh = sample_candidates(lm, kit.seeds, 40, description=task.description, seed=7)
    p_test, p_fresh = p_real(minilm, kit.discriminator.adapter, real_test), p_real(minilm, kit.discriminator.adapter, fresh)
    held_out_accuracy = ((p_test > 0.5).float().sum() + (p_fresh <= 0.5).float().sum()) / (len(real_test) + len(fresh))
    assert held_out_accuracy > 0.65, held_out_accuracy

    config = TransferConfig(samples=32, max_candidates=64, epochs=4, seed=0)
    result = transfer_adapter(source, task, teacher=minilm, student=mpnet, generator=lm, kit=kit,
                              target_modules=MPNET_TARGET_MODULES, config=config, discriminator_base=minilm)
    assert result.adapter.base_model == MPNET_ID
    assert len(result.synthetic) == 32 and result.stats["generated"] == 64

    teacher = teacher_probs(minilm, source, task, result.synthetic)
    student = teacher_probs(mpnet, result.adapter, task, result.synthetic)
    untrained = teacher_probs(mpnet, None, task, result.synthetic)
    fitted, before = _agreement(student, teacher), _agreement(untrained, teacher)
    assert fitted >= 0.8 and fitted > before + 0.1, (fitted, before)
