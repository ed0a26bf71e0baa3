"""Cursor pages through the server: ``/v1/adapters`` (Link / X-Next-Cursor) and the hub's
``GET /api/models``, which the real ``HfApi.list_models`` follows page by page (issue 16, part 3)."""

from __future__ import annotations

import re

import httpx
import pytest
from huggingface_hub import HfApi

from adapterhub.store import AdapterRecord, hub_catalog
from tests.helpers import fake_digest

N = 25


@pytest.fixture(scope="module")
def paged(live):  # type: ignore[no-untyped-def]
    """``N`` catalog rows under ``pages/`` (no blobs: listing reads the catalog only), one private repo."""
    config = {"peft_type": "LORA", "r": 2, "lora_alpha": 4, "base_model_name_or_path": "tiny/base"}
    live.hub.catalog.bulk_add(
        AdapterRecord(
            name=f"pages/a{i:02d}",
            digest=fake_digest(f"pages/a{i:02d}"),
            size=100,
            rank=2,
            alpha=4.0,
            target_modules=("q",),
            config=config,
            base_model="tiny/base" if i % 2 else "tiny/other",
            task="even" if i % 2 == 0 else "odd",
            tags=("lora", f"t{i % 3}"),
        )
        for i in range(N)
    )
    hub_catalog.create_repo(live.hub.catalog, "pages/a07", private=True)  # a private repo with a commit
    live.hub.hub_create_repo("pages/empty")  # created, nothing committed
    return [f"pages/a{i:02d}" for i in range(N)]


def _walk(url: str, params: dict[str, str], headers: dict[str, str] | None = None) -> tuple[list[str], int]:
    """Follow the Link headers of /v1/adapters; returns the names and the number of pages."""
    seen: list[str] = []
    next_url: str | None = f"{url}/v1/adapters"
    pages = 0
    while next_url is not None:
        response = httpx.get(next_url, params=params if pages == 0 else None, headers=headers)
        assert response.status_code == 200, response.text
        pages += 1
        seen.extend(r["name"] for r in response.json())
        link = response.headers.get("link")
        next_url = re.fullmatch(r'<(.+)>; rel="next"', link).group(1) if link else None  # type: ignore[union-attr]
        assert (link is None) == ("x-next-cursor" not in response.headers)
    return seen, pages


def test_v1_adapters_pages_with_cursor(live, paged) -> None:  # type: ignore[no-untyped-def]
    admin = {"Authorization": f"Bearer {live.read_token}"}
    seen, pages = _walk(live.url, {"limit": "4", "tag": "t1"}, admin)
    assert seen == [n for i, n in enumerate(paged) if i % 3 == 1] and pages == 2  # 8 rows: 4 + 4
    seen, pages = _walk(live.url, {"limit": "5", "q": "pages/"}, admin)
    assert seen == paged and pages == 5
    # anonymous callers never see the private repo, and its absence does not shorten pages
    seen, pages = _walk(live.url, {"limit": "6", "q": "pages/"})
    assert seen == [n for n in paged if n != "pages/a07"]
    first = httpx.get(f"{live.url}/v1/adapters", params={"limit": 6, "q": "pages/"}).json()
    assert len(first) == 6 and "pages/a07" not in [r["name"] for r in first]


def test_v1_adapters_default_page_and_bad_cursor(live, paged, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from adapterhub.server import rest

    monkeypatch.setattr(rest, "REST_PAGE", 10)
    seen, pages = _walk(live.url, {"task": "even"})
    assert seen == paged[::2] and pages == 2
    for bad in ("nope!", "AAAA", "MTo", "x" * 2000):
        response = httpx.get(f"{live.url}/v1/adapters", params={"cursor": bad})
        assert 400 <= response.status_code < 500, (bad, response.status_code)
        assert "cursor" in response.text
    assert httpx.get(f"{live.url}/v1/adapters", params={"limit": 0}).status_code == 422
    assert httpx.get(f"{live.url}/v1/adapters", params={"limit": 10**6}).status_code == 422


def test_hf_list_models_follows_cursor_pages(live, paged, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from adapterhub.server import hub_listing

    monkeypatch.setattr(hub_listing, "PAGE_SIZE", 7)
    cursors: list[str | None] = []  # one per page the server answered
    original = live.hub.hub_list_repos_page

    def counting(**kwargs):  # type: ignore[no-untyped-def]
        cursors.append(kwargs["cursor"])
        return original(**kwargs)

    monkeypatch.setattr(live.hub, "hub_list_repos_page", counting)
    api = HfApi(endpoint=live.url, token=live.token)
    expected = sorted([*paged, "pages/empty"])
    assert [m.id for m in api.list_models(author="pages")] == expected
    assert len(cursors) == 4 and cursors[0] is None and all(cursors[1:])  # 26 repos, pages of 7
    assert [m.id for m in api.list_models(author="pages", limit=9)] == expected[:9]
    t2 = [n for i, n in enumerate(paged) if i % 3 == 2]
    assert [m.id for m in api.list_models(author="pages", filter="t2")] == t2
    assert [m.id for m in api.list_models(search="A1", author="pages")] == [f"pages/a{i}" for i in range(10, 20)]
    anonymous = HfApi(endpoint=live.url, token=False)
    assert [m.id for m in anonymous.list_models(author="pages")] == [n for n in expected if n != "pages/a07"]
    # the offset links of older servers still work
    auth = {"Authorization": f"Bearer {live.token}"}
    old = httpx.get(f"{live.url}/api/models", params={"author": "pages", "offset": 20}, headers=auth)
    assert [m["id"] for m in old.json()] == expected[20:27]


def test_hf_list_models_bad_cursor_is_a_client_error(live) -> None:  # type: ignore[no-untyped-def]
    response = httpx.get(f"{live.url}/api/models", params={"cursor": "%%%"})
    assert 400 <= response.status_code < 500 and "cursor" in response.text
