"""Trans-LoRA end to end: the source-side kit, then synthesis, filtering and distillation.

``prepare_source`` runs while the adapter's data is at hand: it keeps the seeds, samples as many
synthetic inputs as it has real ones (up to ``max_real``), and trains the discriminator on the two.
``transfer_adapter`` needs only that kit, the source adapter and the bases: it samples candidates in
rounds, keeps those the discriminator calls real, stops at ``samples`` kept (or at the candidate
budget), has the teacher label them, and distils the student. Every number a user would ask about
(generated, accepted, acceptance rate, seconds per stage) is in the result's ``stats``; the digests
of the seed and synthetic sets let lineage name the exact data without storing it twice.

Progress: ``progress(stage, done, total)`` with stages ``"discriminator data"``, ``"generated"``,
``"accepted"``, ``"distillation"``.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch

from adapterhub.errors import InvalidParameterError
from adapterhub.lora import LoraAdapter
from adapterhub.models.base import BaseModel
from adapterhub.models.causal import CausalLM
from adapterhub.models.train import TrainResult
from adapterhub.tasks import Task
from adapterhub.transfer.discriminator import Discriminator, p_real, train_discriminator
from adapterhub.transfer.distill import Model, teacher_probs, train_student
from adapterhub.transfer.generate import SamplingConfig, sample_candidates

Progress = Callable[[str, int, int], None]
SEED_COUNT = 5
FILTER_RULES = ("threshold", "top")


def texts_digest(texts: Sequence[str]) -> str:
    """sha256 of the texts as JSON lines ``{"text": ...}`` (the examples-file format)."""
    payload = "".join(json.dumps({"text": t}, ensure_ascii=False) + "\n" for t in texts)
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


def _noop(stage: str, done: int, total: int) -> None:
    return None


@dataclass
class SourceKit:
    """What the source side keeps for a later transfer: seeds and the discriminator."""

    seeds: list[str]
    discriminator: Discriminator
    discriminator_base: str
    stats: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class TransferConfig:
    """Knobs of one transfer.

    Attributes:
        samples: |D_syn| to reach (the paper: the original training set size, 250).
        max_candidates: the generation budget; ``None`` is ``8 * samples``.
        filter: keep only candidates the discriminator calls real (``False``: the unfiltered ablation).
        filter_rule: ``"threshold"`` (the paper: keep a candidate when p(real) > 0.5, sample until
            ``samples`` are kept or the budget is spent) or ``"top"`` (sample the whole budget, keep
            the ``samples`` candidates with the highest p(real)). ``"top"`` exists because a
            discriminator that separates a small generator's text from real text almost perfectly
            accepts only a few percent (5 % on WordNet glosses), so the threshold rule leaves D_syn
            small for any affordable budget; ``docs/transfer.md`` compares the two.
        rank, alpha, epochs, batch_size, lr: the student LoRA and its schedule.
        hard_labels: distil on the teacher's argmax instead of its distribution.
        seed: fixes sampling and the student's init and data order.
        sampling: the generator's sampling settings.
    """

    samples: int = 250
    max_candidates: int | None = None
    filter: bool = True
    filter_rule: str = "top"
    rank: int = 8
    alpha: float = 16
    epochs: int = 2
    batch_size: int = 16
    lr: float = 1e-3
    hard_labels: bool = False
    seed: int = 0
    sampling: SamplingConfig = SamplingConfig()

    def __post_init__(self) -> None:
        if self.samples < 1 or (self.max_candidates is not None and self.max_candidates < 1):
            raise InvalidParameterError("--samples and the candidate budget must be at least 1")
        if self.filter_rule not in FILTER_RULES:
            raise InvalidParameterError(f"unknown filter rule '{self.filter_rule}'; choose {' or '.join(FILTER_RULES)}")

    @property
    def budget(self) -> int:
        """Candidates to sample at most: given, else 2 x samples (top rule) or 8 x samples (threshold)."""
        if self.max_candidates is not None:
            return self.max_candidates
        return (2 if self.filter and self.filter_rule == "top" else 8) * self.samples


@dataclass
class TransferResult:
    """The student adapter, its synthetic training set and the run's statistics."""

    adapter: LoraAdapter
    synthetic: list[str]
    teacher_probs: torch.Tensor
    stats: dict[str, float | int | str]
    params: dict


def check_seeds(seeds: Sequence[str]) -> list[str]:
    """Seeds as a clean list; at least one non-empty text.

    Raises:
        InvalidParameterError: no usable seed.
    """
    cleaned = [" ".join(s.split()) for s in seeds if isinstance(s, str) and s.strip()]
    if not cleaned:
        raise InvalidParameterError("the seed set has no example; give at least 1 example input")
    return cleaned


def prepare_source(
    task: Task,
    real: Sequence[str],
    *,
    generator: CausalLM,
    discriminator_base: BaseModel,
    seeds: Sequence[str] | None = None,
    max_real: int = 128,
    seed: int = 0,
    progress: Progress = _noop,
) -> SourceKit:
    """Seeds + discriminator for one adapter, from its real inputs.

    Args:
        task: the adapter's task (its description prompts the generator).
        real: the adapter's real training inputs (at least 5).
        seeds: the seed set (default: the first 5 real inputs).
        max_real: real inputs (and as many synthetic ones) the discriminator trains on.
    """
    real = check_seeds(real)
    seed_set = check_seeds(seeds) if seeds is not None else real[:SEED_COUNT]
    real_used = real[:max_real]
    started = time.perf_counter()
    synthetic = sample_candidates(
        generator, seed_set, len(real_used), description=task.description, seed=seed,
        progress=lambda drawn: progress("discriminator data", drawn, len(real_used)),
    )
    generation_seconds = time.perf_counter() - started
    disc = train_discriminator(discriminator_base, real_used, synthetic, seed=seed)
    stats = {
        "generation_seconds": round(generation_seconds, 2),
        "discriminator_seconds": disc.metrics["seconds"],
        **{f"discriminator_{k}": v for k, v in disc.metrics.items() if k != "seconds"},
    }
    return SourceKit(list(seed_set), disc, discriminator_base.base_model_id, stats)


def synthesize(
    generator: CausalLM,
    seeds: Sequence[str],
    task: Task,
    config: TransferConfig,
    *,
    judge: Callable[[list[str]], torch.Tensor] | None,
    progress: Progress = _noop,
) -> tuple[list[str], dict[str, float | int]]:
    """Sample candidates in rounds until ``config.samples`` are kept or the budget is spent.

    ``judge`` maps texts to p(real); ``None`` keeps every candidate (the unfiltered ablation).
    With ``config.filter_rule == "top"`` the whole budget is sampled and the ``samples`` candidates
    the judge rates most real are kept (in sampling order).
    """
    kept: list[str] = []
    scored: list[tuple[float, int, str]] = []  # top rule: (p_real, order, text) of every candidate
    top = judge is not None and config.filter_rule == "top"
    seen: set[str] = set()
    generated = 0
    gen_seconds = judge_seconds = 0.0
    round_no = 0
    while (top or len(kept) < config.samples) and generated < config.budget:
        want = min(config.budget - generated, max(config.sampling.batch_size, config.samples - len(kept)))
        started = time.perf_counter()
        batch = sample_candidates(generator, seeds, want, description=task.description,
                                  seed=config.seed * 1000 + round_no, config=config.sampling, exclude=seen)
        gen_seconds += time.perf_counter() - started
        round_no += 1
        if not batch:
            break  # the generator only repeats itself
        generated += len(batch)
        started = time.perf_counter()
        p = judge(batch).tolist() if judge is not None else [1.0] * len(batch)
        judge_seconds += time.perf_counter() - started
        scored.extend((q, len(scored), t) for q, t in zip(p, batch))
        if not top:
            kept.extend([t for t, q in zip(batch, p) if q > 0.5][: config.samples - len(kept)])
        progress("generated", generated, config.budget)
        progress("accepted", len(kept) if not top else sum(q > 0.5 for q, _, _ in scored), config.samples)
    if top:
        best = sorted(scored, key=lambda row: (-row[0], row[1]))[: config.samples]
        kept = [t for _, _, t in sorted(best, key=lambda row: row[1])]
    above = sum(q > 0.5 for q, _, _ in scored)
    kept_set = set(kept)
    stats = {
        "generated": generated, "accepted": len(kept), "judged_real": above,
        "acceptance_rate": round(above / generated, 4) if generated else 0.0,
        "kept_min_p_real": round(min((q for q, _, t in scored if t in kept_set), default=0.0), 4),
        "generation_seconds": round(gen_seconds, 2), "judge_seconds": round(judge_seconds, 2),
        "generated_per_second": round(generated / gen_seconds, 2) if gen_seconds else 0.0,
    }
    return kept, stats


def distil(
    teacher: Model,
    source_adapter: LoraAdapter,
    student: Model,
    task: Task,
    texts: Sequence[str],
    config: TransferConfig,
    *,
    target_modules: Sequence[str],
    progress: Progress = _noop,
) -> tuple[TrainResult, torch.Tensor, float]:
    """Teacher labels then student training; returns (result, teacher probs, seconds)."""
    started = time.perf_counter()
    probs = teacher_probs(teacher, source_adapter, task, texts)
    progress("distillation", 0, 1)
    result = train_student(student, task, texts, probs, target_modules=target_modules, rank=config.rank,
                           alpha=config.alpha, epochs=config.epochs, batch_size=config.batch_size, lr=config.lr,
                           seed=config.seed, hard=config.hard_labels)
    progress("distillation", 1, 1)
    return result, probs, time.perf_counter() - started


def transfer_adapter(
    source_adapter: LoraAdapter,
    task: Task,
    *,
    teacher: Model,
    student: Model,
    generator: CausalLM,
    kit: SourceKit | None,
    target_modules: Sequence[str],
    config: TransferConfig = TransferConfig(),
    discriminator_base: BaseModel | None = None,
    seeds: Sequence[str] | None = None,
    progress: Progress = _noop,
) -> TransferResult:
    """Move ``source_adapter`` (on ``teacher``'s base) to ``student``'s base, data-free.

    Args:
        kit: the source-side seeds and discriminator (``None`` only with ``config.filter=False``
            and explicit ``seeds``).
        discriminator_base: the model the discriminator adapts (needed when filtering).
        seeds: overrides the kit's seeds.

    Raises:
        InvalidParameterError: filtering without a kit or its base, or no seeds.
    """
    if config.filter and (kit is None or discriminator_base is None):
        raise InvalidParameterError("filtering needs the source-side discriminator; run `transfer prepare` first")
    seed_set = check_seeds(seeds if seeds is not None else (kit.seeds if kit else []))
    judge = None
    if config.filter:
        assert kit is not None and discriminator_base is not None
        disc = kit.discriminator.adapter
        judge = lambda texts: p_real(discriminator_base, disc, texts)  # noqa: E731
    synthetic, stats = synthesize(generator, seed_set, task, config, judge=judge, progress=progress)
    if not synthetic:
        raise InvalidParameterError(
            f"no synthetic input survived the filter ({stats['generated']} generated); raise --max-candidates"
        )
    result, probs, seconds = distil(teacher, source_adapter, student, task, synthetic, config,
                                    target_modules=target_modules, progress=progress)
    stats.update({
        "distillation_seconds": round(seconds, 2), "distillation_steps": result.metrics["steps"],
        "seeds_digest": texts_digest(seed_set), "synthetic_digest": texts_digest(synthetic),
    })
    params = {**result.params, "targets": "teacher argmax" if config.hard_labels else "teacher distribution",
              "samples": config.samples, "max_candidates": config.budget, "filter": config.filter,
              "filter_rule": config.filter_rule if config.filter else None,
              "temperature": config.sampling.temperature, "top_p": config.sampling.top_p}
    return TransferResult(result.adapter, synthetic, probs, stats, params)
