"""Trans-LoRA on tiny random models: the discriminator, teacher labels, student distillation, and
the pipeline's filter and budget. Generation and the packaged-MPNet cache are
``tests/transfer/test_generate_and_mpnet.py``'s.

Expected values are computed here independently of the engine (merged dense weights for the
teacher, hand-written JSON lines for digests). Everything runs on one thread (results are
bit-identical for a fixed thread count, so the agreement thresholds are measured values with a
margin, not luck).
"""

from __future__ import annotations

import copy
import hashlib
import json
import random

import pytest
import torch
import torch.nn.functional as F

import adapterhub.transfer.pipeline as pipeline
from adapterhub.errors import InvalidParameterError
from adapterhub.lora import LoraAdapter
from adapterhub.lora.keys import head_keys
from adapterhub.models.base import BaseModel, tiny_random_bert
from adapterhub.models.lora_layers import lora_attached, lora_layers
from adapterhub.models.train import train_adapter
from adapterhub.tasks import Example, Label, Task
from adapterhub.transfer import (
    DISCRIMINATOR_TASK,
    Discriminator,
    SamplingConfig,
    SourceKit,
    TransferConfig,
    check_seeds,
    p_real,
    synthesize,
    teacher_probs,
    texts_digest,
    train_discriminator,
    train_student,
    transfer_adapter,
)
from adapterhub.transfer.discriminator import discriminator_task
from tests.helpers import WORDS, synthetic_task, word_task
from tests.transfer.engine_fixtures import _one_thread_module  # noqa: F401  (an autouse fixture)

TARGETS = ["query", "key", "value", "dense"]
STUDENT_KW = dict(rank=4, alpha=8, epochs=12, batch_size=8, lr=1e-2, seed=0)


@pytest.fixture(scope="module")
def task() -> Task:
    return synthetic_task()


@pytest.fixture(scope="module")
def teacher(task: Task) -> tuple[BaseModel, LoraAdapter]:
    """Tiny BERT (seed 0) + a similarity LoRA trained on the word-class task (~98 % accurate)."""
    model = tiny_random_bert(seed=0)
    result = train_adapter(model, task, rank=4, alpha=8, epochs=6, lr=1e-2, batch_size=8, seed=0)
    return model, result.adapter


@pytest.fixture(scope="module")
def real_pool() -> list[str]:
    """Real task inputs the source never trained on (another draw of the same task), distinct."""
    pool = word_task(WORDS, "pool", "x", n_per_class=40, seed=11)
    return list(dict.fromkeys(pool.texts("train") + pool.texts("validation")))


@pytest.fixture(scope="module")
def held_out() -> list[str]:
    return [e.text for e in word_task(WORDS, "held", "x", n_per_class=40, seed=99).examples]


def _junk(i: int) -> str:
    return f"{i:04d} {(i * 7919) % 10000:04d} 99"


class FakeGenerator:
    """Stands in for ``sample_candidates``: a fixed stream alternating real inputs and junk, honouring
    ``exclude`` like the real one, recording every request."""

    def __init__(self, stream: list[str]) -> None:
        self.stream = list(stream)
        self.pos = 0
        self.requests: list[int] = []

    def __call__(self, lm, seeds, n, *, description, seed=0, config=None, exclude=None, progress=None):
        self.requests.append(n)
        out = []
        while len(out) < n and self.pos < len(self.stream):
            text = self.stream[self.pos]
            self.pos += 1
            if exclude is not None and text.lower() in exclude:
                continue
            if exclude is not None:
                exclude.add(text.lower())
            out.append(text)
        return out


def _mixed_stream(real: list[str]) -> list[str]:
    stream = []
    for i, text in enumerate(real):
        stream += [text, _junk(i)]
    return stream


def _agreement(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.argmax(-1) == b.argmax(-1)).float().mean())


# -- 1. perfect discriminator + teacher: the student matches the teacher ---------------------------------


def test_perfect_filter_and_teacher_make_the_student_match_the_teacher(monkeypatch, task, teacher, real_pool,
                                                                          held_out):
    source, adapter = teacher
    real_set = set(real_pool)
    judge_calls: list[int] = []

    def perfect_judge(texts: list[str]) -> torch.Tensor:
        judge_calls.append(len(texts))
        return torch.tensor([1.0 if t in real_set else 0.0 for t in texts])

    fake = FakeGenerator(_mixed_stream(real_pool))
    monkeypatch.setattr(pipeline, "sample_candidates", fake)
    config = TransferConfig(samples=len(real_pool), max_candidates=1000, sampling=SamplingConfig(batch_size=16),
                            filter_rule="threshold",
                            **STUDENT_KW)
    kept, stats = synthesize(None, ["apple pear plum grape"], task, config, judge=perfect_judge)
    # the perfect filter keeps exactly the real inputs, in order, and no junk
    assert kept == real_pool
    assert stats["accepted"] == len(real_pool) and stats["generated"] == sum(judge_calls) == fake.pos
    # rounds ask for what is missing (at least a sampling batch): 88 -> 44 kept, 44 -> 22, 22 -> 11, 16 -> 8,
    # 16 -> the stream's last 6 texts, 3 real: all 88 kept, nothing more drawn
    assert fake.requests == [88, 44, 22, 16, 16] and stats["generated"] == 176
    assert stats["acceptance_rate"] == round(len(real_pool) / stats["generated"], 4)

    probs = teacher_probs(source, adapter, task, kept)
    student = tiny_random_bert(seed=1)
    result = train_student(student, task, kept, probs, target_modules=TARGETS, **STUDENT_KW)
    assert not list(lora_layers(student.model))  # the student base is restored

    want = teacher_probs(source, adapter, task, held_out)
    got = teacher_probs(student, result.adapter, task, held_out)
    untrained = teacher_probs(student, None, task, held_out)
    # measured: 0.925 trained (0.91-0.94 over training seeds), 0.58 untrained
    assert _agreement(got, want) >= 0.85
    assert _agreement(untrained, want) <= 0.7
    kl = lambda p, q: float((q * (q.log() - p.log())).sum(-1).mean())  # noqa: E731  KL(teacher || student)
    assert kl(got, want) < 0.5 * kl(untrained, want)

    # the pipeline end to end (discriminator = the perfect judge) gives the very same student
    monkeypatch.setattr(pipeline, "sample_candidates", FakeGenerator(_mixed_stream(real_pool)))
    monkeypatch.setattr(pipeline, "p_real", lambda base, disc, texts: perfect_judge(list(texts)))
    kit = SourceKit(["apple pear plum grape"], Discriminator(adapter, {}, {}), "tiny")
    stages: list[str] = []
    out = transfer_adapter(adapter, task, teacher=source, student=student, generator=None, kit=kit,
                           target_modules=TARGETS, config=config, discriminator_base=source,
                           progress=lambda stage, done, total: stages.append(stage))
    assert out.synthetic == real_pool
    assert out.adapter.digest == result.adapter.digest
    torch.testing.assert_close(out.teacher_probs, probs, rtol=0, atol=0)
    assert out.stats["synthetic_digest"] == texts_digest(real_pool)
    assert out.stats["seeds_digest"] == texts_digest(["apple pear plum grape"])
    assert out.stats["distillation_steps"] == 12 * -(-len(real_pool) // 8)
    assert out.params["targets"] == "teacher distribution" and out.params["filter"] is True
    assert {"generated", "accepted", "distillation"} <= set(stages)


# -- 2. a discriminator that always says "no" ------------------------------------------------------------


def test_a_judge_that_says_no_keeps_nothing_and_stops_at_the_budget(monkeypatch, task, real_pool):
    fake = FakeGenerator(_mixed_stream(real_pool))
    monkeypatch.setattr(pipeline, "sample_candidates", fake)
    config = TransferConfig(samples=5, max_candidates=37, sampling=SamplingConfig(batch_size=16), filter_rule="threshold")
    seen_by_judge: list[str] = []

    def no(texts):
        seen_by_judge.extend(texts)
        return torch.zeros(len(texts))

    kept, stats = synthesize(None, ["seed text"], task, config, judge=no)
    assert kept == [] and stats["accepted"] == 0 and stats["acceptance_rate"] == 0.0
    assert fake.requests == [16, 16, 5]  # batch-size rounds, the last one cut to the budget
    assert stats["generated"] == 37 == len(seen_by_judge)
    # p == 0.5 exactly is not "real" either (kept only when p(real) > p(synthetic))
    fake2 = FakeGenerator(_mixed_stream(real_pool))
    monkeypatch.setattr(pipeline, "sample_candidates", fake2)
    kept, stats = synthesize(None, ["seed text"], task, config, judge=lambda t: torch.full((len(t),), 0.5))
    assert kept == [] and stats["generated"] == 37


def test_unfiltered_synthesis_keeps_everything_and_stops_when_the_generator_runs_dry(monkeypatch, task):
    fake = FakeGenerator([f"text {c}" for c in "abcdefg"])
    monkeypatch.setattr(pipeline, "sample_candidates", fake)
    kept, stats = synthesize(None, ["seed"], task, TransferConfig(samples=20), judge=None)
    assert kept == [f"text {c}" for c in "abcdefg"]
    assert stats["generated"] == 7 and stats["acceptance_rate"] == 1.0
    assert len(fake.requests) == 2  # the second round came back empty


def _always_no_discriminator(base: BaseModel, donor: LoraAdapter) -> LoraAdapter:
    """The donor's LoRA with a real/synthetic head that always says synthetic (bias 8 vs -8)."""
    w_key, b_key = head_keys(DISCRIMINATOR_TASK)
    return LoraAdapter.from_modules(
        dict(donor.modules()), base_model=base.base_model_id,
        extra_tensors={w_key: torch.zeros(2, base.hidden_size), b_key: torch.tensor([8.0, -8.0])},
    )


def test_transfer_with_an_always_no_discriminator_raises_and_trains_nothing(monkeypatch, tmp_path, task, teacher,
                                                                           real_pool):
    source, adapter = teacher
    disc = _always_no_discriminator(source, adapter)
    probs = p_real(source, disc, real_pool[:4])
    torch.testing.assert_close(probs, torch.full((4,), torch.sigmoid(torch.tensor(-16.0)).item()))
    fake = FakeGenerator(_mixed_stream(real_pool))
    monkeypatch.setattr(pipeline, "sample_candidates", fake)

    def must_not_run(*args, **kwargs):
        raise AssertionError("distillation ran although nothing survived the filter")

    monkeypatch.setattr(pipeline, "teacher_probs", must_not_run)
    monkeypatch.setattr(pipeline, "train_student", must_not_run)
    kit = SourceKit(["apple pear"], Discriminator(disc, {}, {}), source.base_model_id)
    config = TransferConfig(samples=10, max_candidates=30, sampling=SamplingConfig(batch_size=16),
                            filter_rule="threshold")
    student = tiny_random_bert(seed=1)
    before = sorted(tmp_path.rglob("*"))
    with pytest.raises(InvalidParameterError, match="no synthetic input survived"):
        transfer_adapter(adapter, task, teacher=source, student=student, generator=None, kit=kit,
                         target_modules=TARGETS, config=config, discriminator_base=source)
    assert fake.pos == 30  # the whole budget was drawn and judged
    assert sorted(tmp_path.rglob("*")) == before
    assert not list(lora_layers(source.model)) and not list(lora_layers(student.model))


def test_transfer_argument_checks(task, teacher):
    source, adapter = teacher
    with pytest.raises(InvalidParameterError, match="discriminator"):
        transfer_adapter(adapter, task, teacher=source, student=source, generator=None, kit=None,
                         target_modules=TARGETS, discriminator_base=source)
    with pytest.raises(InvalidParameterError, match="seed"):
        transfer_adapter(adapter, task, teacher=source, student=source, generator=None, kit=None,
                         target_modules=TARGETS, config=TransferConfig(filter=False))


# -- 3. teacher distributions ----------------------------------------------------------------------------


def _merged_embeddings(base: BaseModel, adapter: LoraAdapter | None, texts: list[str]) -> torch.Tensor:
    """Mean-pooled, L2-normalised embeddings of a deep copy of the base with ``scale B A`` added to
    each adapted weight (no LoRA layers, no ``encode``)."""
    model = copy.deepcopy(base.model).eval()
    if adapter is not None:
        names = dict(model.named_modules())
        for path in adapter.module_paths:
            name = next(n for n in names if n and (path == n or path.endswith("." + n)))
            with torch.no_grad():
                names[name].weight += adapter.delta_weight(path).to(names[name].weight.dtype)
    batch = base.tokenizer(texts, padding=True, truncation=True, max_length=base.max_length, return_tensors="pt")
    with torch.no_grad():
        hidden = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                       token_type_ids=batch.get("token_type_ids")).last_hidden_state
    mask = batch["attention_mask"].unsqueeze(-1).float()
    pooled = (hidden * mask).sum(1) / mask.sum(1)
    return pooled / pooled.norm(dim=-1, keepdim=True)


def test_teacher_probs_of_an_encoder_is_the_softmax_of_cosines_over_005(task, teacher, held_out):
    source, adapter = teacher
    texts = held_out[:10]
    got = teacher_probs(source, adapter, task, texts)
    text_emb = _merged_embeddings(source, adapter, texts)
    label_emb = _merged_embeddings(source, adapter, task.label_descriptions)
    want = torch.softmax((text_emb @ label_emb.T) / 0.05, dim=-1)
    assert got.shape == (10, 3)
    torch.testing.assert_close(got, want, rtol=0, atol=2e-5)
    torch.testing.assert_close(got.sum(-1), torch.ones(10), rtol=0, atol=1e-6)
    # the bare base (adapter=None) and another temperature
    bare = teacher_probs(source, None, task, texts, temperature=0.5)
    want_bare = torch.softmax(_merged_embeddings(source, None, texts)
                              @ _merged_embeddings(source, None, task.label_descriptions).T / 0.5, dim=-1)
    torch.testing.assert_close(bare, want_bare, rtol=0, atol=2e-5)
    assert not torch.allclose(bare, got, atol=1e-3)
    # the same with lora_attached + the engine's own embeddings
    with lora_attached(source.model, [adapter]):
        t, lab = source.encode(texts), source.encode(task.label_descriptions)
    torch.testing.assert_close(got, torch.softmax(t @ lab.T / 0.05, dim=-1), rtol=0, atol=1e-6)
    assert not list(lora_layers(source.model))


def test_teacher_probs_refuses_a_generation_task(teacher):
    source, adapter = teacher
    gen = Task("g", "gen", (), "s", "l", (Example("0", "q", -1, "train", ("a",)),), kind="generation")
    with pytest.raises(InvalidParameterError, match="generation"):
        teacher_probs(source, adapter, gen, ["q"])


# -- 4. train_adapter(soft_targets=...) ------------------------------------------------------------------


def test_soft_targets_wrong_shape_is_refused(task):
    model = tiny_random_bert(seed=0)
    n = len(task.texts("train"))
    for shape in [(n - 1, 3), (n, 2), (n,), (n, 3, 1)]:
        with pytest.raises(InvalidParameterError, match="soft_targets"):
            train_adapter(model, task, soft_targets=torch.full(shape, 1 / 3), epochs=1, max_steps=1)
    assert not list(lora_layers(model.model))


@pytest.mark.parametrize("protocol", ["similarity", "head"])
def test_one_hot_soft_targets_train_exactly_like_hard_labels(task, protocol):
    kw = dict(rank=4, alpha=8, epochs=2, lr=1e-2, batch_size=8, seed=3, protocol=protocol)
    hard = train_adapter(tiny_random_bert(seed=0), task, **kw)
    one_hot = F.one_hot(torch.tensor(task.label_ids("train")), 3).double()  # float64 in: cast by the trainer
    soft = train_adapter(tiny_random_bert(seed=0), task, soft_targets=one_hot, **kw)
    assert len(hard.losses) == len(soft.losses) == 2 * -(-36 // 8)
    assert soft.losses == pytest.approx(hard.losses, abs=1e-6)
    assert soft.adapter.module_paths == hard.adapter.module_paths
    for path in hard.adapter.module_paths:
        a, b = hard.adapter.module(path), soft.adapter.module(path)
        torch.testing.assert_close(b.A, a.A, rtol=0, atol=1e-6)
        torch.testing.assert_close(b.B, a.B, rtol=0, atol=1e-6)
    assert hard.adapter.extra_tensor_names == soft.adapter.extra_tensor_names
    for name, tensor in hard.adapter.extra_tensors().items():
        torch.testing.assert_close(soft.adapter.extra_tensors()[name], tensor, rtol=0, atol=1e-6)
    # and a genuinely soft target trains something else
    smooth = one_hot * 0.6 + 0.4 / 3
    other = train_adapter(tiny_random_bert(seed=0), task, soft_targets=smooth, **kw)
    assert other.adapter.digest != hard.adapter.digest


def test_train_student_hard_uses_the_argmax(task, teacher):
    source, adapter = teacher
    texts = task.texts("train")[:16]
    probs = teacher_probs(source, adapter, task, texts)
    kw = dict(rank=2, alpha=4, epochs=1, batch_size=8, lr=1e-2, seed=0)
    hard = train_student(tiny_random_bert(seed=1), task, texts, probs, target_modules=TARGETS, hard=True, **kw)
    one_hot = F.one_hot(probs.argmax(-1), 3).float()
    soft = train_student(tiny_random_bert(seed=1), task, texts, one_hot, target_modules=TARGETS, **kw)
    assert hard.losses == pytest.approx(soft.losses, abs=1e-6)
    with pytest.raises(InvalidParameterError):
        train_student(tiny_random_bert(seed=1), task, [], probs[:0], target_modules=TARGETS)


# -- 6. the discriminator --------------------------------------------------------------------------------


def _styled(chars: str, n: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    return [" ".join("".join(rng.choice(chars) for _ in range(5)) for _ in range(3)) for _ in range(n)]


def test_discriminator_tells_letters_from_digits():
    base = tiny_random_bert(seed=0)
    real, synthetic = _styled("abcdefghij", 30, 0), _styled("0123456789", 30, 1)
    disc = train_discriminator(base, real, synthetic, epochs=4, seed=0)
    assert disc.metrics["validation_accuracy"] > 0.8
    assert disc.metrics["real"] == 30 and disc.metrics["synthetic"] == 30
    assert sorted(disc.adapter.extra_tensor_names) == sorted(head_keys(DISCRIMINATOR_TASK))
    assert not list(lora_layers(base.model))
    # recompute the reported validation accuracy on the same held-out fifth
    val = discriminator_task(real, synthetic, split_seed=0).split("validation")
    assert len(val) == 12
    p_val = p_real(base, disc.adapter, [e.text for e in val])
    acc = float(((p_val > 0.5).long() == torch.tensor([e.label for e in val])).float().mean())
    assert acc == disc.metrics["validation_accuracy"]
    # fresh texts of both styles, never seen in training
    fresh_real, fresh_syn = _styled("abcdefghij", 20, 5), _styled("0123456789", 20, 6)
    p = p_real(base, disc.adapter, fresh_real + fresh_syn)
    assert p.shape == (40,) and bool(((p >= 0) & (p <= 1)).all())
    fresh_acc = float(torch.cat([(p[:20] > 0.5), (p[20:] <= 0.5)]).float().mean())
    assert fresh_acc > 0.8
    # p_real is the head's softmax over the adapted embeddings
    w, b = (disc.adapter.extra_tensors()[k] for k in head_keys(DISCRIMINATOR_TASK))
    with lora_attached(base.model, [disc.adapter]):
        emb = base.encode(fresh_real[:3])
    torch.testing.assert_close(p[:3], torch.softmax(emb @ w.T + b, -1)[:, 1], rtol=0, atol=1e-6)
    assert p_real(base, disc.adapter, []).shape == (0,)


def test_discriminator_argument_checks(teacher):
    base, adapter = teacher
    four, five = _styled("abc", 4, 0), _styled("012", 5, 0)
    with pytest.raises(InvalidParameterError, match="at least 5"):
        train_discriminator(base, four, five)
    with pytest.raises(InvalidParameterError, match="at least 5"):
        train_discriminator(base, five, four)
    with pytest.raises(InvalidParameterError, match="discriminator"):
        p_real(base, adapter, ["some text"])  # a task LoRA without the real/synthetic head


# -- 7. pipeline helpers ---------------------------------------------------------------------------------


def test_check_seeds():
    for bad in ([], ["  "], ["", "\n\t"]):
        with pytest.raises(InvalidParameterError):
            check_seeds(bad)
    assert check_seeds(["  a \n b ", "", "c"]) == ["a b", "c"]


def test_texts_digest_is_stable_and_order_sensitive():
    texts = ["héllo", 'a "quoted" text', "x"]
    want = hashlib.sha256("".join(json.dumps({"text": t}, ensure_ascii=False) + "\n"
                                  for t in texts).encode("utf-8")).hexdigest()
    assert texts_digest(texts) == want == texts_digest(list(texts))
    assert texts_digest(list(reversed(texts))) != want
    assert texts_digest(["ab", "c"]) != texts_digest(["a", "bc"])


def test_transfer_config_checks():
    for bad in [dict(samples=0), dict(samples=-1), dict(max_candidates=0)]:
        with pytest.raises(InvalidParameterError):
            TransferConfig(**bad)
    assert TransferConfig(samples=7, filter_rule="threshold").budget == 56
    assert TransferConfig(samples=7).budget == 14  # the top rule samples twice what it keeps
    assert TransferConfig(samples=7, filter=False).budget == 56
    assert TransferConfig(samples=7, max_candidates=9).budget == 9
