"""What the SmolLM2-135M base costs on this machine, beside the reference ways of doing the same.

Prints (JSON):
* load: cold (dequantise the GGUF and write the cache) and cached, in seconds;
* scoring: multiple-choice examples/s of ``choice_logprobs`` (the prompt once, with a KV cache,
  then every label against it) against scoring each ``prompt + label`` in full (what a plain
  lm-evaluation-harness loglikelihood request does), same model, same examples; and the ratio;
* generation: greedy exact-match examples/s (``generate``, 8 new tokens);
* training: seconds per AdamW step (batch 8) of ``train_causal_adapter``'s loop against PEFT's
  ``get_peft_model`` on the same base, same batch, same LoRA (rank 8, 7 projections); the ratio;
* peak RSS of the process.

Run (about 3 minutes on 2 cores; the cold load uses a temporary cache):
    .venv/bin/python bench/smollm2_bench.py [--examples 48] [--steps 6] [--dtype bfloat16|float32]
"""

from __future__ import annotations

import argparse
import json
import resource
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from adapterhub.models.causal import LLAMA_TARGET_MODULES, load_smollm2
from adapterhub.models.lm_scoring import answer_loss, choice_logprobs, generate
from adapterhub.models.lora_layers import inject_lora, restore_on_exit
from adapterhub.models.prompts import target_answers, task_messages
from adapterhub.models.train import _freeze_all_but_lora
from adapterhub.tasks import load_task


def timed(fn) -> tuple[float, object]:
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


@torch.no_grad()
def naive_scores(lm, prompts, options) -> list[torch.Tensor]:
    """Each prompt + label scored in its own full forward pass (batched over the labels)."""
    out = []
    for p in prompts:
        rows = [p + o for o in options]
        width = max(map(len, rows))
        ids = torch.full((len(rows), width), lm.pad_id)
        for i, r in enumerate(rows):
            ids[i, : len(r)] = torch.tensor(r)
        logp = F.log_softmax(lm.model(input_ids=ids).logits.float(), dim=-1)
        out.append(torch.tensor([sum(logp[i, len(p) - 1 + t, o[t]].item() for t in range(len(o)))
                                 for i, o in enumerate(options)]))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=48)
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--dtype", default=None, choices=("bfloat16", "float32"))
    args = parser.parse_args()
    dtype = getattr(torch, args.dtype) if args.dtype else None
    report: dict = {"threads": torch.get_num_threads()}
    with tempfile.TemporaryDirectory() as tmp:
        report["load_cold_s"], _ = timed(lambda: load_smollm2(cache_dir=Path(tmp) / "smollm2", dtype=dtype))
        report["load_cached_s"], lm = timed(lambda: load_smollm2(cache_dir=Path(tmp) / "smollm2", dtype=dtype))
    report["dtype"] = str(lm.dtype).removeprefix("torch.")

    task = load_task("wn_noun_supersense")  # 8 labels: where sharing the prompt pays most
    texts = task.texts("test")[: args.examples]
    prompts = [lm.prompt_ids(task_messages(task, t)) for t in texts]
    options = [lm.answer_ids(a) for a in task.label_answers]
    ours_s, ours = timed(lambda: choice_logprobs(lm, prompts, [options] * len(prompts)))
    naive_s, naive = timed(lambda: naive_scores(lm, prompts, options))
    agree = sum(int(a.argmax() == b.argmax()) for a, b in zip(ours, naive)) / len(ours)
    report["scoring"] = {"examples_per_s": round(len(texts) / ours_s, 1),
                         "naive_examples_per_s": round(len(texts) / naive_s, 1),
                         "speedup_vs_naive": round(naive_s / ours_s, 2), "same_prediction": agree}

    gen_task = load_task("wn_antonym")
    gen_prompts = [lm.prompt_ids(task_messages(gen_task, t)) for t in gen_task.texts("test")[: args.examples]]
    gen_s, _ = timed(lambda: generate(lm, gen_prompts, max_new_tokens=8))
    report["generation_examples_per_s"] = round(len(gen_prompts) / gen_s, 1)

    train_prompts = prompts[:8]
    train_answers = [lm.answer_ids(a) for a in target_answers(task, "test")[:8]]
    with restore_on_exit(lm.model):
        inject_lora(lm.model, rank=8, alpha=16, target_modules=LLAMA_TARGET_MODULES, exclude_modules=None)
        _freeze_all_but_lora(lm.model)
        opt = torch.optim.AdamW([p for p in lm.model.parameters() if p.requires_grad], lr=1e-3)

        def step() -> None:
            loss = answer_loss(lm, train_prompts, train_answers)
            opt.zero_grad()
            loss.backward()
            opt.step()

        step()  # warm-up
        ours_step = min(timed(step)[0] for _ in range(args.steps))
    for p in lm.model.parameters():
        p.requires_grad_(False)
    from peft import LoraConfig, get_peft_model

    peft_model = get_peft_model(lm.model, LoraConfig(r=8, lora_alpha=16, target_modules=list(LLAMA_TARGET_MODULES),
                                                     task_type="CAUSAL_LM"))
    peft_opt = torch.optim.AdamW([p for p in peft_model.parameters() if p.requires_grad], lr=1e-3)
    rows = [list(p) + list(a) for p, a in zip(train_prompts, train_answers)]
    width = max(map(len, rows))
    ids = torch.full((len(rows), width), lm.pad_id)
    labels = torch.full((len(rows), width), -100)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, (r, a) in enumerate(zip(rows, train_answers)):
        ids[i, width - len(r):] = torch.tensor(r)
        mask[i, width - len(r):] = 1
        labels[i, width - len(a):] = torch.tensor(a)

    def peft_step() -> None:
        loss = peft_model(input_ids=ids, attention_mask=mask, labels=labels).loss
        peft_opt.zero_grad()
        loss.backward()
        peft_opt.step()

    peft_step()
    peft_s = min(timed(peft_step)[0] for _ in range(args.steps))
    report["train_step_s"] = {"ours": round(ours_step, 3), "peft": round(peft_s, 3),
                              "peft_over_ours": round(peft_s / ours_step, 2), "batch": 8}
    report["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    report["load_cold_s"] = round(report["load_cold_s"], 1)
    report["load_cached_s"] = round(report["load_cached_s"], 1)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
