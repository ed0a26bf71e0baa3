"""Deep nesting and alias bombs in committed files (issue 9, items 1 and 2), replayed on a live server.

A commit carrying a 50,000-deep ``adapter_config.json``, a README whose front matter nests 20,000
deep, a 444-byte-class alias bomb in ``adapterhub.lineage[].params``, or card metadata that is small
as YAML but large once its aliases are expanded: each is refused with a 4xx, and the catalog, the
blob store and the staging folder are left as they were.
"""

from __future__ import annotations

import base64
import json
import time

import httpx
import pytest
from huggingface_hub import HfApi

from adapterhub.hubformat.modelcard import MAX_CARD_METADATA_BYTES
from tests.helpers import staging_folders, store_state, write_random_adapter

REPO = "acme/limits"


def file_op(path: str, data: bytes) -> dict:
    return {"key": "file", "value": {"content": base64.b64encode(data).decode(), "path": path, "encoding": "base64"}}


def ndjson(files: dict[str, bytes]) -> bytes:
    lines = [{"key": "header", "value": {"summary": "attack", "description": ""}}]
    lines += [file_op(path, data) for path, data in files.items()]
    return b"".join(json.dumps(line).encode() + b"\n" for line in lines)


@pytest.fixture(scope="module")
def adapter_files(tmp_path_factory) -> dict[str, bytes]:
    folder = write_random_adapter(tmp_path_factory.mktemp("limits") / "a", seed=31)
    return {p.name: p.read_bytes() for p in folder.iterdir()}


@pytest.fixture(scope="module")
def target(live, tmp_path_factory):
    folder = write_random_adapter(tmp_path_factory.mktemp("good") / "a", seed=30)
    api = HfApi(endpoint=live.url, token=live.token)
    api.create_repo(REPO)
    api.upload_folder(repo_id=REPO, folder_path=str(folder))
    return live


def card(front: str) -> bytes:
    return f"---\n{front}\n---\n# a card\n".encode()


def alias_bomb_params(levels: int = 9) -> list[str]:
    """The "billion laughs": each level lists the previous one nine times (9**9 leaves, ~500 bytes)."""
    lines = ["p0: &p0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    for i in range(1, levels):
        lines.append(f"p{i}: &p{i} [{', '.join([f'*p{i - 1}'] * 9)}]")
    return lines


def lineage_card(params: list[str]) -> bytes:
    """A card whose ``adapterhub.lineage[0].params`` mapping holds ``params`` (one YAML line each)."""
    head = "library_name: peft\nadapterhub:\n  name: acme/limits\n  lineage:\n"
    row = "  - parent: acme/a\n    operation: merge:lego\n    params:\n"
    return card(head + row + "\n".join("      " + line for line in params))


def big_after_expansion() -> list[str]:
    """~1 KB of YAML whose params expand to ~90 KB of JSON: under the YAML budget, over the card's."""
    return [
        "p0: &p0 " + json.dumps(["x" * 100] * 10),
        "p1: &p1 [" + ", ".join(["*p0"] * 9) + "]",
        "p2: [" + ", ".join(["*p1"] * 9) + "]",
    ]


CASES = {
    "deep-adapter-config": (lambda f: {**f, "adapter_config.json": b"[" * 50_000 + b"]" * 50_000}, "nested"),
    "deep-object-adapter-config": (
        lambda f: {**f, "adapter_config.json": b'{"peft_type": "LORA", "r": 2, "lora_alpha": 2, "x": '
                   + b"[" * 5_000 + b"]" * 5_000 + b"}"}, "nested"),
    "deep-readme": (lambda f: {**f, "README.md": card("x: " + "[" * 20_000 + "]" * 20_000)}, "deeper than"),
    "alias-bomb-readme": (lambda f: {**f, "README.md": lineage_card(alias_bomb_params())}, "expands to more than"),
    "recursive-alias-readme": (lambda f: {**f, "README.md": card("a: &a [1, *a]")}, "recursive"),
    "metadata-too-large-after-expansion": (
        lambda f: {**f, "README.md": lineage_card(big_after_expansion())}, "once expanded"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bomb_in_a_commit_is_refused_and_changes_nothing(target, adapter_files, case):
    make, needle = CASES[case]
    files = make(adapter_files)
    before = store_state(target.home)
    start = time.perf_counter()
    response = httpx.post(
        f"{target.url}/api/models/{REPO}/commit/main",
        content=ndjson(files),
        headers={"Authorization": f"Bearer {target.token}", "Content-Type": "application/x-ndjson"},
        timeout=30,
    )
    assert time.perf_counter() - start < 3
    assert 400 <= response.status_code < 500, response.text
    assert needle in response.json()["error"], response.text
    assert "Traceback" not in response.text
    assert store_state(target.home) == before
    assert not staging_folders(target.home)


def test_deeply_nested_commit_line_is_a_4xx(target):
    before = store_state(target.home)
    deep = b"[" * 50_000 + b"]" * 50_000
    header = json.dumps({"key": "header", "value": {"summary": "x", "description": ""}}).encode()
    for body in (header + b"\n" + deep + b"\n", b'{"key": "header", "value": ' + deep + b"}\n"):
        response = httpx.post(
            f"{target.url}/api/models/{REPO}/commit/main",
            content=body,
            headers={"Authorization": f"Bearer {target.token}", "Content-Type": "application/x-ndjson"},
            timeout=30,
        )
        assert 400 <= response.status_code < 500, response.text
    assert store_state(target.home) == before
    assert not staging_folders(target.home)


def test_the_expanded_metadata_case_is_small_as_yaml():
    text = lineage_card(big_after_expansion())
    assert len(text) < 2_000 < MAX_CARD_METADATA_BYTES


def test_lineage_reads_stay_small_after_a_good_card(target, adapter_files):
    """A card with modest lineage params is accepted, and its lineage answers quickly."""
    files = {**adapter_files, "README.md": lineage_card(["method: lego", "k: 4"])}
    response = httpx.post(
        f"{target.url}/api/models/{REPO}/commit/main",
        content=ndjson(files),
        headers={"Authorization": f"Bearer {target.token}", "Content-Type": "application/x-ndjson"},
        timeout=30,
    )
    assert response.status_code == 200, response.text
    lineage = httpx.get(f"{target.url}/v1/adapters/{REPO}/lineage", timeout=10)
    assert lineage.status_code == 200
    assert len(lineage.content) < 10_000
