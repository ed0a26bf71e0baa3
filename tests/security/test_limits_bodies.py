"""Anonymous denial of service through request bodies (issue 9, item 1), replayed on a live server.

Each attack is sent to a real ``adapterhub serve`` on loopback. The checks: the status code, that
the catalog and the blob store are unchanged, and for the large bodies that ``/v1/health`` keeps
answering within 200 ms while the body is being refused (the refusal happens while the body is
read, and parsing runs off the event loop).
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from urllib.parse import urlparse

import httpx
import pytest

from adapterhub.hubformat.limits import MAX_BODY_BYTES
from tests.helpers import store_state

HEALTH_BUDGET_S = 0.2
BIG = 20 << 20  # five times the body limit


def _chunks(total: int, size: int = 256 << 10) -> Iterator[bytes]:
    piece = b"x" * size
    sent = 0
    while sent < total:
        n = min(size, total - sent)
        yield piece[:n]
        sent += n


def raw_post(url: str, path: str, body: Iterator[bytes], *, length: int | None, token: str | None = None) -> int:
    """POST a body from a thread while reading the answer here (the server may answer, and close,
    before the body is through); returns the status code."""
    parsed = urlparse(url)
    sock = socket.create_connection((parsed.hostname, parsed.port))
    framing = f"Content-Length: {length}\r\n" if length is not None else "Transfer-Encoding: chunked\r\n"
    auth = f"Authorization: Bearer {token}\r\n" if token else ""
    head = f"POST {path} HTTP/1.1\r\nHost: {parsed.netloc}\r\nContent-Type: application/json\r\n{auth}{framing}\r\n"

    def send() -> None:
        try:
            sock.sendall(head.encode())
            for chunk in body:
                sock.sendall(chunk if length is not None else b"%x\r\n%s\r\n" % (len(chunk), chunk))
            if length is None:
                sock.sendall(b"0\r\n\r\n")
        except OSError:  # the server refused and closed: expected
            pass

    sender = threading.Thread(target=send, daemon=True)
    sender.start()
    sock.settimeout(20)
    answer = b""
    try:
        while b"\r\n" not in answer:
            data = sock.recv(65536)
            if not data:
                break
            answer += data
    finally:
        sock.close()
        sender.join(timeout=20)
    assert answer.startswith(b"HTTP/1.1 "), answer[:200]
    return int(answer.split(b" ", 2)[1])


def refused_while_healthy(live, path: str, *, length: int | None, token: str | None = None) -> tuple[int, float]:
    """Send a 20 MB body to ``path``; meanwhile poll ``/v1/health``. Returns (status, worst health latency)."""
    result: dict[str, int] = {}

    def attack() -> None:
        result["status"] = raw_post(live.url, path, _chunks(BIG), length=length if length is None else BIG, token=token)

    worst = 0.0
    with httpx.Client(base_url=live.url, timeout=5) as client:
        client.get("/v1/health")  # connect first: time the answers, not the handshake
        thread = threading.Thread(target=attack)
        thread.start()
        while thread.is_alive():
            start = time.perf_counter()
            assert client.get("/v1/health").status_code == 200
            worst = max(worst, time.perf_counter() - start)
            time.sleep(0.005)
        thread.join()
    return result["status"], worst


@pytest.mark.parametrize("framing", ["content-length", "chunked"])
@pytest.mark.parametrize("path", ["/api/validate-yaml", "/api/repos/create", "/v1/merge"])
def test_oversized_body_is_413_and_health_stays_fast(live, path, framing):
    before = store_state(live.home)
    token = None if path == "/api/validate-yaml" else live.token
    status, worst = refused_while_healthy(live, path, length=BIG if framing == "content-length" else None, token=token)
    assert status == 413
    assert worst < HEALTH_BUDGET_S, f"/v1/health took {worst * 1000:.0f} ms while a big body was refused"
    assert store_state(live.home) == before


def test_content_length_over_the_limit_is_refused_before_the_body_is_sent(live):
    parsed = urlparse(live.url)
    with socket.create_connection((parsed.hostname, parsed.port)) as sock:
        sock.sendall(
            f"POST /api/validate-yaml HTTP/1.1\r\nHost: {parsed.netloc}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {400 << 20}\r\n\r\n".encode()
        )
        sock.settimeout(5)
        answer = sock.recv(65536)
    assert answer.startswith(b"HTTP/1.1 413 ")
    assert b"at most %d bytes" % MAX_BODY_BYTES in answer


def test_5mb_yaml_to_validate_yaml_is_refused_quickly(live):
    content = "---\n" + "".join(f"key{i}: value {i}\n" for i in range(400_000)) + "---\n"
    payload = json.dumps({"content": content}).encode()
    assert len(payload) > 5_000_000
    start = time.perf_counter()
    try:
        response = httpx.post(f"{live.url}/api/validate-yaml", content=payload, timeout=30)
        assert response.status_code == 413
    except httpx.TransportError:
        pass  # answered 413 and closed before the whole body was sent: also a refusal
    assert time.perf_counter() - start < 2


def test_yaml_under_the_body_limit_but_huge_front_matter_is_refused_quickly(live):
    content = "---\n" + "".join(f"key{i}: value {i}\n" for i in range(150_000)) + "---\n"  # ~3 MB
    start = time.perf_counter()
    response = httpx.post(f"{live.url}/api/validate-yaml", json={"content": content}, timeout=30)
    assert time.perf_counter() - start < 1.5
    assert response.status_code == 400
    assert "larger than" in response.json()["error"]


DEEP = 50_000


@pytest.mark.parametrize(
    "path, token",
    [("/api/validate-yaml", None), ("/api/repos/create", "write"), ("/v1/merge", "write"),
     ("/api/models/acme/none/preupload/main", "write")],
)
def test_deeply_nested_json_body_is_a_4xx(live, path, token):
    before = store_state(live.home)
    headers = {"Authorization": f"Bearer {live.token}"} if token else {}
    response = httpx.post(f"{live.url}{path}", content=b"[" * DEEP + b"]" * DEEP, headers=headers, timeout=10)
    assert 400 <= response.status_code < 500, response.text
    assert "Traceback" not in response.text
    response = httpx.post(
        f"{live.url}{path}", content=b'{"content": ' + b"[" * DEEP + b"]" * DEEP + b"}", headers=headers, timeout=10
    )
    assert 400 <= response.status_code < 500, response.text
    assert store_state(live.home) == before


def test_health_stays_fast_while_nested_bodies_are_refused(live):
    deep_json = b'{"content": ' + b"[" * DEEP + b"]" * DEEP + b"}"
    deep_yaml = json.dumps({"content": "---\nx: " + "[" * 20_000 + "]" * 20_000 + "\n---\n"}).encode()
    statuses: list[int] = []

    def attack() -> None:
        with httpx.Client(base_url=live.url, timeout=10) as attacker:
            for _ in range(4):
                for body in (deep_json, deep_yaml):
                    statuses.append(attacker.post("/api/validate-yaml", content=body).status_code)

    worst = 0.0
    with httpx.Client(base_url=live.url, timeout=5) as client:
        client.get("/v1/health")
        thread = threading.Thread(target=attack)
        thread.start()
        while thread.is_alive():
            start = time.perf_counter()
            assert client.get("/v1/health").status_code == 200
            worst = max(worst, time.perf_counter() - start)
            time.sleep(0.005)
        thread.join()
    assert len(statuses) == 8 and all(400 <= s < 500 for s in statuses), statuses
    assert worst < HEALTH_BUDGET_S, f"/v1/health took {worst * 1000:.0f} ms while nested bodies were refused"


def test_deeply_nested_yaml_card_is_refused_by_validate_yaml(live):
    content = "---\nx: " + "[" * 20_000 + "]" * 20_000 + "\n---\n"
    response = httpx.post(f"{live.url}/api/validate-yaml", json={"content": content}, timeout=10)
    assert response.status_code == 400
    assert "deeper than" in response.json()["error"]


def alias_bomb(levels: int = 9) -> str:
    """The "billion laughs" in YAML: each level lists the previous one nine times (9**9 leaves)."""
    lines = ["a0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    for i in range(1, levels):
        lines.append(f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]")
    return "\n".join(lines)


def test_alias_bomb_is_refused_by_validate_yaml_without_expanding(live):
    content = "---\n" + alias_bomb() + "\n---\n"
    assert len(content) < 700
    start = time.perf_counter()
    response = httpx.post(f"{live.url}/api/validate-yaml", json={"content": content}, timeout=10)
    assert time.perf_counter() - start < 0.5
    assert response.status_code == 400
    assert "expands to more than" in response.json()["error"]


def test_a_normal_card_still_validates(live):
    content = "---\nlibrary_name: peft\ntags: [lora]\nbase_model: x/y\nshared: &s {a: 1}\nagain: *s\n---\n# card\n"
    response = httpx.post(f"{live.url}/api/validate-yaml", json={"content": content}, timeout=10)
    assert response.status_code == 200, response.text
