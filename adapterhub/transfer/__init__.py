"""Trans-LoRA: move an adapter to a new base model without its training data.

Wang et al., "Trans-LoRA: towards data-free Transferable Parameter Efficient Finetuning"
(NeurIPS 2024, arXiv 2405.17258). At source time (``prepare_source``): keep a few seed inputs and
train a discriminator that tells the task's real inputs from a generator's imitations. At transfer
time (``transfer_adapter``): a generator LM prompted with the seeds samples candidates, the
discriminator keeps the ones that look real, the teacher (source base + source LoRA) labels them
and the student (target base + fresh LoRA) is distilled on them.

Modules, each with one job: ``generate`` (seed-prompted sampling), ``discriminator`` (real vs
synthetic LoRA + head), ``distill`` (teacher distributions, student training), ``pipeline``
(the two stages, their statistics and digests).
"""

from adapterhub.transfer.discriminator import DISCRIMINATOR_TASK, Discriminator, p_real, train_discriminator
from adapterhub.transfer.distill import task_with_train, teacher_probs, train_student
from adapterhub.transfer.generate import SamplingConfig, sample_candidates, seed_prompt
from adapterhub.transfer.pipeline import (
    SEED_COUNT,
    SourceKit,
    TransferConfig,
    TransferResult,
    check_seeds,
    prepare_source,
    synthesize,
    texts_digest,
    transfer_adapter,
)

__all__ = [
    "DISCRIMINATOR_TASK",
    "SEED_COUNT",
    "Discriminator",
    "SamplingConfig",
    "SourceKit",
    "TransferConfig",
    "TransferResult",
    "check_seeds",
    "p_real",
    "prepare_source",
    "sample_candidates",
    "seed_prompt",
    "synthesize",
    "task_with_train",
    "teacher_probs",
    "texts_digest",
    "train_discriminator",
    "train_student",
    "transfer_adapter",
]
