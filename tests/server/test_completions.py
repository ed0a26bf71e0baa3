"""OpenAI-compatible generation on a live server with the real SmolLM2-135M and shipped adapters:
greedy answers equal ``transformers``' ``generate`` with the adapter attached, streaming gives the
same text, ``auto`` routes by the last user message, the ``openai`` client works unchanged."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
import torch

from adapterhub.eval.library import library_dir
from adapterhub.models import lora_attached
from adapterhub.models.bases import get_base
from adapterhub.route.base import draw_examples, render_examples

pytestmark = pytest.mark.slow  # SmolLM2 decoding on CPU: about a minute for the module

QUESTION = [{"role": "user", "content": "Which part of speech is the word described as 'a small songbird'? "
                                        "Answer noun, verb or adjective."}]
TOPIC = [{"role": "user", "content": "Tell me about the history of computers."}]


@pytest.fixture(scope="module")
def llm(live, tmp_path_factory):
    folder = tmp_path_factory.mktemp("examples")
    for task, name in (("wn_pos", "llm/pos"), ("chat_topic", "llm/topic")):
        examples = folder / f"{task}.jsonl"
        examples.write_bytes(render_examples(draw_examples(task, 32)))
        live.hub.add(library_dir() / "smollm2" / task, name, task=task, examples=examples)
    return live


def _post(live, path: str, body: dict) -> httpx.Response:
    return httpx.post(f"{live.url}{path}", json=body, timeout=300)


def _reference(live, messages: list[dict], adapters: dict[str, float], max_tokens: int) -> str:
    lm = get_base("smollm2").load()
    ids = torch.tensor([lm.prompt_ids(messages)])
    with lora_attached(lm.model, [live.hub.load(n) for n in adapters], weights=list(adapters.values())):
        out = lm.model.generate(ids, attention_mask=torch.ones_like(ids), do_sample=False, max_new_tokens=max_tokens,
                                eos_token_id=[lm.end_id], pad_token_id=lm.pad_id)
    return lm.decode(out[0, ids.shape[1]:].tolist())


def test_greedy_chat_equals_transformers_generate_with_the_adapter(llm):
    cases = [("llm/pos", None, {"llm/pos": 1.0}), ("mixture", {"llm/pos": 0.6, "llm/topic": 0.4},
                                                   {"llm/pos": 0.6, "llm/topic": 0.4})]
    bodies = [{"model": m, "mixture": mix, "messages": QUESTION, "max_tokens": 6, "temperature": 0} for m, mix, _ in cases]
    with ThreadPoolExecutor(2) as pool:  # both in flight at once: they may share a batch
        answers = list(pool.map(lambda b: _post(llm, "/v1/chat/completions", b), bodies))
    for (_, _, adapters), r in zip(cases, answers):
        assert r.status_code == 200, r.text
        choice = r.json()["choices"][0]
        assert choice["message"]["content"].strip() == _reference(llm, QUESTION, adapters, 6).strip()
        assert choice["finish_reason"] in ("stop", "length")


def test_streaming_gives_the_same_text_as_one_answer(llm):
    body = {"model": "llm/topic", "messages": TOPIC, "max_tokens": 12, "temperature": 0}
    whole = _post(llm, "/v1/chat/completions", body).json()["choices"][0]["message"]["content"]
    with httpx.stream("POST", f"{llm.url}/v1/chat/completions", json={**body, "stream": True}, timeout=300) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        lines = [line[6:] for line in r.iter_lines() if line.startswith("data: ")]
    assert lines[-1] == "[DONE]"
    chunks = [json.loads(line) for line in lines[:-1]]
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks)
    assert text == whole and len(chunks) > 3 and chunks[-1]["choices"][0]["finish_reason"] in ("stop", "length")


def test_completions_and_auto(llm):
    r = _post(llm, "/v1/completions", {"model": "base", "prompt": ["The capital of France is", "1, 2, 3,"],
                                       "max_tokens": 4, "temperature": 0})
    assert r.status_code == 200, r.text
    assert [c["index"] for c in r.json()["choices"]] == [0, 1] and r.json()["usage"]["completion_tokens"] <= 8
    auto = _post(llm, "/v1/chat/completions", {"model": "auto", "messages": QUESTION, "max_tokens": 4, "temperature": 0})
    assert auto.status_code == 200, auto.text
    decision = llm.hub.route([QUESTION[-1]["content"]], router="hedged", among=["llm/pos", "llm/topic"])[0]
    assert auto.json()["routes"][0] == [{"name": n, "weight": round(w, 6)} for n, w in decision.adapters]
    by_hand = _reference(llm, QUESTION, dict(decision.adapters), 4)
    assert auto.json()["choices"][0]["message"]["content"].strip() == by_hand.strip()


def test_the_openai_client_chats_and_streams(llm):
    openai = pytest.importorskip("openai")
    key = llm.hub.create_token(name="llm-reader", owner="llm", write=False)["token"]
    client = openai.OpenAI(base_url=f"{llm.url}/v1", api_key=key, max_retries=0)
    answer = client.chat.completions.create(model="llm/pos", messages=QUESTION, max_tokens=4, temperature=0)
    assert answer.choices[0].message.role == "assistant" and answer.usage.completion_tokens >= 1
    streamed = client.chat.completions.create(model="llm/pos", messages=QUESTION, max_tokens=4, temperature=0,
                                              stream=True)
    text = "".join(c.choices[0].delta.content or "" for c in streamed if c.choices)
    assert text == answer.choices[0].message.content
    sampled = [client.completions.create(model="llm/topic", prompt="Once upon a time", max_tokens=6, temperature=0.9,
                                         seed=7).choices[0].text for _ in range(2)]
    assert sampled[0] == sampled[1]  # a seed reproduces a sample


@pytest.mark.parametrize(
    ("path", "body", "status", "needle"),
    [
        ("/v1/completions", {"model": "llm/none", "prompt": "x"}, 404, "llm/none"),
        ("/v1/completions", {"model": "llm/pos", "prompt": "x", "max_tokens": 0}, 422, "max_tokens"),
        ("/v1/completions", {"model": "llm/pos", "prompt": "x", "max_tokens": 100000}, 422, "max_tokens"),
        ("/v1/completions", {"model": "llm/pos", "prompt": "x", "temperature": 5}, 422, "temperature"),
        ("/v1/completions", {"model": "llm/pos", "prompt": "x", "top_p": 0}, 422, "top_p"),
        ("/v1/completions", {"model": "llm/pos", "prompt": "x", "n": 2}, 422, "n=1"),
        ("/v1/completions", {"model": "llm/pos", "prompt": "x", "stop": ["\n"]}, 422, "stop"),
        ("/v1/completions", {"model": "llm/pos", "prompt": ["x"] * 17}, 422, "16"),
        ("/v1/completions", {"model": "llm/pos", "prompt": ""}, 422, "non-empty"),
        ("/v1/completions", {"model": "minilm", "prompt": "x"}, 422, "causal"),
        ("/v1/chat/completions", {"model": "llm/pos", "messages": []}, 422, "messages"),
        ("/v1/chat/completions", {"model": "llm/pos", "messages": [{"role": "robot", "content": "x"}]}, 422, "role"),
        ("/v1/chat/completions", {"model": "llm/pos", "messages": [{"role": "assistant", "content": "x"}]}, 422,
         "last message"),
        ("/v1/embeddings", {"model": "llm/pos", "input": "x"}, 422, "encoder"),
    ],
)
def test_bad_generation_requests_get_openai_shaped_4xx(llm, path, body, status, needle):
    r = _post(llm, path, body)
    assert r.status_code == status, r.text
    assert needle in r.json()["error"]["message"]
