"""``POST /v1/route`` on a live server: the CLI's JSON answer, over the caller's readable adapters."""

from __future__ import annotations

import httpx
import pytest
from huggingface_hub import HfApi

from adapterhub.eval.library import library_dir

NOUN_LABELS = ["noun.animal", "noun.plant", "noun.food", "noun.artifact",
               "noun.person", "noun.location", "noun.body", "noun.substance"]


@pytest.fixture(scope="module")
def routed(live):
    HfApi(endpoint=live.url, token=live.token).create_repo("acme/secret-pos", private=True)
    live.hub.add(library_dir() / "wn_pos", "acme/secret-pos", task="wn_pos")
    live.hub.add(library_dir() / "wn_noun_supersense", "lib/nouns", task="wn_noun_supersense")
    live.hub.add(library_dir() / "chat_topic", "lib/chat", task="chat_topic")
    return live


def _route(live, body: dict, token: str | None = None) -> httpx.Response:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx.post(f"{live.url}/v1/route", json=body, headers=headers, timeout=120)


def test_route_answers_as_the_cli_and_hides_private_adapters(routed):
    anonymous = _route(routed, {"queries": ["a small songbird", "hello, how are you?"], "top_k": 3})
    assert anonymous.status_code == 200, anonymous.text
    routes = anonymous.json()["routes"]
    assert [r["query"] for r in routes] == ["a small songbird", "hello, how are you?"]
    assert all({a["name"] for a in r["adapters"]} <= {"lib/nouns", "lib/chat"} for r in routes)  # private one unseen
    admin = _route(routed, {"queries": ["a small songbird"], "top_k": 3}, routed.read_token).json()["routes"][0]
    assert "acme/secret-pos" in {a["name"] for a in admin["adapters"]}
    cli_like = routed.hub.route(["a small songbird"], top_k=3, among=["lib/chat", "lib/nouns"])[0].to_dict()
    assert anonymous.json()["routes"][0] == cli_like


def test_route_by_labels_and_run(routed):
    r = _route(routed, {"queries": ["a small songbird"], "labels": NOUN_LABELS, "run": True})
    assert r.status_code == 200, r.text
    answer = r.json()["routes"][0]
    assert answer["router"] == "labels" and answer["adapters"] == [{"name": "lib/nouns", "weight": 1.0}]
    assert answer["prediction"] == "noun.animal"


@pytest.mark.parametrize(
    ("body", "status", "needle"),
    [
        ({"queries": ["x"], "router": "oracle"}, 422, "unknown router"),
        ({"queries": ["x"], "top_k": 0}, 422, "top_k"),
        ({"queries": []}, 422, "queries"),
        ({"queries": ["x" * 5000]}, 422, "4096"),
        ({"queries": ["x"], "among": ["acme/secret-pos"]}, 404, "secret-pos"),
        ({"queries": ["x"], "among": ["lib/none"]}, 404, "lib/none"),
        ({"queries": ["x"] * 300}, 422, "queries"),
        ({"queries": ["x"], "extra": 1}, 422, "extra"),
    ],
)
def test_bad_route_requests_are_4xx(routed, body, status, needle):
    r = _route(routed, body)
    assert r.status_code == status, r.text
    assert needle in r.json()["error"] and "Traceback" not in r.text
