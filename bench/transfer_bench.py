"""Trans-LoRA's three costly stages, each against a reference run in the same process.

Run (JSON on stdout; ``--json PATH`` also writes it):
    .venv/bin/python bench/transfer_bench.py                 # real models: SmolLM2, MiniLM, MPNet
    .venv/bin/python bench/transfer_bench.py --tiny          # tiny random models (seconds; a smoke test)

1. **generation** — ``transfer.sample_candidates`` (left-padded batches of ``--batch`` prompts, stopped at
   the first newline) vs the plain ``transformers`` loop a user writes first: one prompt at a time,
   ``generate(max_new_tokens)`` without a newline stop. Candidates per second, same prompts, same sampling.
2. **filtering** — ``transfer.p_real`` (the discriminator LoRA attached to the shared encoder, batched
   embedding, one matmul head) vs the same discriminator loaded by PEFT (``PeftModel.from_pretrained`` on the
   base, then the head by hand): texts per second; the two must give the same probabilities (1e-4).
3. **distillation** — ``transfer.train_student`` (adapterhub's LoRA layers, one optimizer step per batch)
   vs PEFT's ``get_peft_model`` with the same rank, targets, data, loss and AdamW: seconds per step.

The machine's load average is recorded: timings on a shared machine are pessimistic.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from adapterhub.models.base import BaseModel, cached_base_model, tiny_random_bert
from adapterhub.models.causal import CausalLM, cached_smollm2, tiny_random_llama
from adapterhub.models.lora_layers import DEFAULT_TARGET_MODULES
from adapterhub.models.train import DEFAULT_TEMPERATURE
from adapterhub.tasks import load_task
from adapterhub.transfer import p_real, sample_candidates, seed_prompt, teacher_probs, train_discriminator, train_student
from adapterhub.transfer.generate import SamplingConfig, clean_candidate


def _rate(n: int, seconds: float) -> float:
    return round(n / seconds, 2) if seconds > 0 else float("inf")


def bench_generation(lm: CausalLM, seeds: list[str], description: str, n: int, batch: int) -> dict:
    config = SamplingConfig(batch_size=batch)
    started = time.perf_counter()
    ours = sample_candidates(lm, seeds, n, description=description, seed=0, config=config)
    ours_s = time.perf_counter() - started
    prompt = seed_prompt(seeds, description)
    ids = torch.tensor([lm.tokenizer(prompt, add_special_tokens=False)["input_ids"]])
    torch.manual_seed(0)
    started = time.perf_counter()
    plain = []
    with torch.no_grad():
        for _ in range(n):
            out = lm.model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), do_sample=True,
                                    temperature=config.temperature, top_p=config.top_p, top_k=0,
                                    max_new_tokens=config.max_new_tokens, pad_token_id=lm.pad_id)
            plain.append(clean_candidate(lm.decode(out[0, ids.shape[1]:].tolist())))
    plain_s = time.perf_counter() - started
    return {"n": n, "batch": batch, "adapterhub_per_s": _rate(len(ours), ours_s),
            "plain_generate_per_s": _rate(n, plain_s), "speedup": round(plain_s / n / (ours_s / max(1, len(ours))), 2)}


def bench_filter(base: BaseModel, texts: list[str], synthetic: list[str]) -> dict:
    from peft import PeftModel

    from adapterhub.lora.keys import head_keys
    from adapterhub.transfer import DISCRIMINATOR_TASK

    disc = train_discriminator(base, texts, synthetic, epochs=1, seed=0).adapter
    pool = (texts + synthetic) * 4
    started = time.perf_counter()
    ours = p_real(base, disc, pool)
    ours_s = time.perf_counter() - started
    with tempfile.TemporaryDirectory() as tmp:
        disc.save(tmp)
        peft_model = PeftModel.from_pretrained(base.model, tmp)
        w_key, b_key = head_keys(DISCRIMINATOR_TASK)
        weight, bias = disc.extra_tensors()[w_key].float(), disc.extra_tensors()[b_key].float()
        started = time.perf_counter()
        with torch.no_grad():
            chunks = []
            for i in range(0, len(pool), 128):
                batch = base.tokenize(pool[i:i + 128])
                hidden = peft_model(**batch).last_hidden_state
                mask = batch["attention_mask"].unsqueeze(-1).float()
                emb = F.normalize((hidden * mask).sum(1) / mask.sum(1), dim=-1)
                chunks.append(torch.softmax(emb @ weight.T + bias, dim=-1)[:, 1])
        theirs = torch.cat(chunks)
        peft_s = time.perf_counter() - started
        peft_model.unload()
    return {"texts": len(pool), "adapterhub_per_s": _rate(len(pool), ours_s), "peft_per_s": _rate(len(pool), peft_s),
            "speedup": round(peft_s / ours_s, 2), "max_abs_diff": float((ours - theirs).abs().max())}


def bench_distillation(teacher: BaseModel, student: BaseModel, targets: tuple[str, ...], texts: list[str],
                       task_name: str, steps: int) -> dict:
    from peft import LoraConfig, get_peft_model

    task = load_task(task_name)
    probs = teacher_probs(teacher, None, task, texts)
    batch = 16
    texts = texts[: steps * batch]
    probs = probs[: len(texts)]
    started = time.perf_counter()
    ours = train_student(student, task, texts, probs, target_modules=targets, epochs=1, batch_size=batch, seed=0)
    ours_per_step = (time.perf_counter() - started) / ours.metrics["steps"]
    config = LoraConfig(r=8, lora_alpha=16, target_modules=list(targets), lora_dropout=0.0)
    peft_model = get_peft_model(student.model, config)
    optimizer = torch.optim.AdamW([p for p in peft_model.parameters() if p.requires_grad], lr=1e-3)
    descriptions = student.tokenize(task.label_descriptions)
    peft_model.train()
    started = time.perf_counter()
    for i in range(0, len(texts), batch):
        def embed(b: dict) -> torch.Tensor:
            hidden = peft_model(**b).last_hidden_state
            mask = b["attention_mask"].unsqueeze(-1).float()
            return F.normalize((hidden * mask).sum(1) / mask.sum(1), dim=-1)

        logits = embed(student.tokenize(texts[i:i + batch])) @ embed(descriptions).T / DEFAULT_TEMPERATURE
        loss = F.cross_entropy(logits, probs[i:i + batch])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    peft_per_step = (time.perf_counter() - started) / max(1, len(range(0, len(texts), batch)))
    peft_model.unload()
    student.model.eval()
    return {"steps": ours.metrics["steps"], "batch": batch, "adapterhub_s_per_step": round(ours_per_step, 3),
            "peft_s_per_step": round(peft_per_step, 3), "speedup": round(peft_per_step / ours_per_step, 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="tiny random models (a smoke test of the bench)")
    parser.add_argument("--task", default="wn_adj_kind")
    parser.add_argument("--n", type=int, default=32, help="candidates to generate")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--steps", type=int, default=6, help="distillation steps")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    task = load_task(args.task)
    texts = task.texts("train")[:128]
    if args.tiny:
        lm, teacher, student = tiny_random_llama(), tiny_random_bert(seed=0), tiny_random_bert(seed=1)
        student_targets = DEFAULT_TARGET_MODULES
    else:
        from adapterhub.models.mpnet import MPNET_TARGET_MODULES, cached_mpnet

        lm, teacher, student, student_targets = cached_smollm2(), cached_base_model(), cached_mpnet(), MPNET_TARGET_MODULES
    print(f"generation ({args.n} candidates)…", file=sys.stderr)
    generation = bench_generation(lm, texts[:5], task.description, args.n, args.batch)
    synthetic = sample_candidates(lm, texts[:5], 64, description=task.description, seed=1)
    print("filtering…", file=sys.stderr)
    filtering = bench_filter(teacher, texts[:64], synthetic)
    print(f"distillation ({args.steps} steps)…", file=sys.stderr)
    distillation = bench_distillation(teacher, student, student_targets, texts, task.name, args.steps)
    result = {"models": "tiny" if args.tiny else "SmolLM2-135M / MiniLM / MPNet", "threads": args.threads,
              "load_average": os.getloadavg()[0], "generation": generation, "filtering": filtering,
              "distillation": distillation,
              "summary": {k: v["speedup"] for k, v in (("generation", generation), ("filtering", filtering),
                                                        ("distillation", distillation))}}
    text = json.dumps(result, indent=1)
    print(text)
    if args.json:
        args.json.write_text(text)


if __name__ == "__main__":
    main()
