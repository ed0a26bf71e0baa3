"""The web pages (``adapterhub/server/web``) through FastAPI's TestClient: they render, filter,
page, hide private repos exactly as the API does, refuse forms without the CSRF token, send the
security headers, and render a hostile README without any of its scripts, styles or handlers."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from adapterhub.app import AdapterHub
from adapterhub.server import create_app
from tests.server.webhelpers import FORBIDDEN, make_web_catalog

PAGES = ["/ui/", "/ui/adapters/web/sql", "/ui/adapters/web/child", "/ui/compare?a=web/sql&a=web/chat", "/ui/compose",
         "/ui/signin"]


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Any, dict[str, str]]]:
    tmp = tmp_path_factory.mktemp("web")
    hub = AdapterHub(tmp / "home")
    tokens = make_web_catalog(hub, tmp)
    app = create_app(hub)
    try:
        yield app, tokens
    finally:
        hub.jobs.shutdown()
        hub.close()


@pytest.fixture
def client(served: tuple[Any, dict[str, str]]) -> TestClient:
    return TestClient(served[0])


def names_on(html: str) -> list[str]:
    return re.findall(r'<tr class="adapter-row" data-name="([^"]+)"', html)


def csrf_of(client: TestClient) -> str:
    client.get("/ui/signin")
    value = client.cookies.get("adapterhub_csrf")
    assert value
    return value


def sign_in(client: TestClient, token: str) -> None:
    response = client.post("/ui/signin", data={"token": token, "csrf": csrf_of(client)}, follow_redirects=False)
    assert response.status_code == 303 and response.headers["location"] == "/ui/"
    cookie = response.headers["set-cookie"]
    assert "HttpOnly" in cookie and "samesite=strict" in cookie.lower()


@pytest.mark.parametrize("path", PAGES)
def test_pages_render_with_security_headers(client: TestClient, path: str) -> None:
    response = client.get(path)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/html")
    csp = response.headers["content-security-policy"]
    for rule in ("default-src 'none'", "script-src 'self'", "style-src 'self'", "frame-ancestors 'none'",
                 "form-action 'self'", "base-uri 'none'"):
        assert rule in csp
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["referrer-policy"] == "same-origin"
    assert "<script>" not in response.text  # our one script is a file: no inline script anywhere


def test_root_redirects_and_hub_routes_are_not_shadowed(client: TestClient) -> None:
    response = client.get("/", follow_redirects=False)
    assert response.status_code == 307 and response.headers["location"] == "/ui/"
    assert client.get("/api/models").headers["content-type"].startswith("application/json")
    assert client.get("/v1/adapters/web/sql").json()["name"] == "web/sql"
    css = client.get("/ui/static/app.css")
    assert css.status_code == 200 and "immutable" in css.headers["cache-control"]
    assert client.get("/ui/static/../app.py").status_code == 404


def test_catalog_lists_searches_filters_sorts_and_pages(client: TestClient) -> None:
    assert names_on(client.get("/ui/").text) == ["web/chat", "web/child", "web/evil", "web/heir", "web/sql"]
    assert names_on(client.get("/ui/?q=sql").text) == ["web/child", "web/sql"]  # name or task
    assert names_on(client.get("/ui/?task=chat").text) == ["web/chat", "web/heir"]
    assert names_on(client.get("/ui/?tag=prod").text) == ["web/sql"]
    assert names_on(client.get("/ui/?base_model=other-base").text) == ["web/chat"]
    by_accuracy = names_on(client.get("/ui/?sort=accuracy").text)
    assert by_accuracy[:2] == ["web/sql", "web/chat"]  # 0.9, 0.7; unmeasured ones after, by name
    assert "No adapter matches" in client.get("/ui/?q=no-such-thing").text
    first = client.get("/ui/?limit=2")
    assert names_on(first.text) == ["web/chat", "web/child"]
    next_url = re.search(r'href="([^"]+)" id="next-page"', first.text).group(1).replace("&amp;", "&")
    assert names_on(client.get(next_url).text) == ["web/evil", "web/heir"]
    top = client.get("/ui/?sort=accuracy&limit=1")  # the private 0.99 is skipped, the page still full
    assert names_on(top.text) == ["web/sql"]
    next_url = re.search(r'href="([^"]+)" id="next-page"', top.text).group(1).replace("&amp;", "&")
    assert names_on(client.get(next_url).text) == ["web/chat"]


def test_adapter_page_shows_card_config_files_revisions_metrics_and_lineage(client: TestClient) -> None:
    html = client.get("/ui/adapters/web/sql").text
    assert "text-to-sql" in html and "query, value" in html  # task, targets
    assert "adapter_model.safetensors" in html and "README.md" in html  # files
    assert re.search(r"<td>accuracy</td><td>0\.900</td>\s*<td>0\.500</td>\s*<td>\+0\.400</td>", html)  # baseline, gain
    child = client.get("/ui/adapters/web/child").text
    svg = re.search(r"<svg.*?</svg>", child, re.S).group(0)
    assert "merge:lego" in svg and "k=4 seed=0" in svg  # the operation and its parameters
    assert 'href="/ui/adapters/web/sql"' in svg and 'href="/ui/adapters/web/chat"' in svg  # parents link
    assert 'href="/ui/adapters/web/child"' in client.get("/ui/adapters/web/sql").text  # a child


def test_compare_puts_adapters_side_by_side(client: TestClient) -> None:
    html = client.get("/ui/compare?a=web/sql&a=web/chat").text
    assert re.search(r'id="shared-targets">query, value<', html)
    assert html.count('class="rank"') == 2
    assert "0.900" in html and "0.700" in html and "(base 0.500)" in html
    assert "Choose two or more" in client.get("/ui/compare?a=web/sql").text
    with_lineage = client.get("/ui/compare?a=web/child&a=web/heir")  # parents listed, a private one hidden
    assert with_lineage.status_code == 200 and 'href="/ui/adapters/web/sql"' in with_lineage.text
    assert "secret/plan" not in with_lineage.text and '<span class="tag">hidden</span>' in with_lineage.text
    assert client.get("/ui/compare?" + "&".join(f"a=web/x{i}" for i in range(9))).status_code == 422


def test_private_repos_are_invisible_signed_out_and_visible_signed_in(served: tuple[Any, dict[str, str]]) -> None:
    app, tokens = served
    out = TestClient(app)
    listing = out.get("/ui/").text
    assert "secret/plan" not in listing and "secret-tag" not in listing and "secret-task" not in listing
    assert "secret" not in out.get("/ui/?sort=accuracy").text
    assert out.get("/ui/?q=secret").text.count("adapter-row") == 0
    assert out.get("/ui/adapters/secret/plan").status_code == 404  # as a missing one: names cannot be probed
    assert out.get("/ui/compare?a=secret/plan&a=web/sql").status_code == 404
    assert "secret/plan" not in out.get("/ui/compose").text and "secret/plan" not in out.get("/ui/compare").text
    heir = out.get("/ui/adapters/web/heir").text
    assert "secret/plan" not in heir and "hidden" in re.search(r"<svg.*?</svg>", heir, re.S).group(0)

    signed_in = TestClient(app)
    sign_in(signed_in, tokens["owner"])
    assert "secret/plan" in names_on(signed_in.get("/ui/").text)
    page = signed_in.get("/ui/adapters/secret/plan")
    assert page.status_code == 200 and "private" in page.text
    assert 'href="/ui/adapters/secret/plan"' in signed_in.get("/ui/adapters/web/heir").text
    # sign out: the cookie goes and the private repo with it
    signed_in.post("/ui/signout", data={"csrf": signed_in.cookies.get("adapterhub_csrf")})
    assert "secret/plan" not in signed_in.get("/ui/").text


def test_read_token_required_applies_to_pages(served: tuple[Any, dict[str, str]]) -> None:
    app, tokens = served
    app.state.read_token_required = True
    try:
        client = TestClient(app)
        response = client.get("/ui/")
        assert response.status_code == 401 and "Sign in" in response.text
        sign_in(client, tokens["admin"])
        assert client.get("/ui/").status_code == 200
    finally:
        app.state.read_token_required = False


def test_forms_refuse_a_missing_or_wrong_csrf_token(served: tuple[Any, dict[str, str]]) -> None:
    app, tokens = served
    client = TestClient(app)
    csrf = csrf_of(client)
    assert client.post("/ui/signin", data={"token": tokens["admin"]}).status_code == 403
    assert client.post("/ui/signin", data={"token": tokens["admin"], "csrf": "forged"}).status_code == 403
    cross_site = client.post("/ui/signin", data={"token": tokens["admin"], "csrf": csrf},
                             headers={"Origin": "https://evil.example"})
    assert cross_site.status_code == 403 and "adapterhub_token" not in cross_site.headers.get("set-cookie", "")
    sign_in(client, tokens["admin"])
    spec = {"a": ["web/sql", "web/chat"], "method": "linear"}
    assert client.post("/ui/merge", data=spec).status_code == 403  # signed in, but no CSRF token
    assert client.post("/ui/signout", data={"csrf": ""}).status_code == 403
    assert client.post("/ui/signin", content=b'{"token": "x"}', headers={"content-type": "application/json"}
                       ).status_code == 422


def test_sign_in_returns_to_the_page_it_came_from_on_this_site_only(served: tuple[Any, dict[str, str]]) -> None:
    app, tokens = served
    for wanted, landed in (("/ui/adapters/secret/plan", "/ui/adapters/secret/plan"), ("//evil.example/x", "/ui/"),
                           ("https://evil.example/", "/ui/"), ("/\\evil.example", "/ui/")):
        client = TestClient(app)
        assert 'name="next" value="' in client.get("/ui/signin", params={"next": wanted}).text
        response = client.post("/ui/signin", data={"token": tokens["owner"], "csrf": csrf_of(client), "next": wanted},
                               follow_redirects=False)
        assert response.status_code == 303 and response.headers["location"] == landed


def test_sign_in_with_a_bad_token_and_merge_signed_out(served: tuple[Any, dict[str, str]]) -> None:
    app, _ = served
    client = TestClient(app)
    response = client.post("/ui/signin", data={"token": "ah_nope", "csrf": csrf_of(client)})
    assert response.status_code == 401 and "unknown or was revoked" in response.text
    merged = client.post("/ui/merge", data={"a": ["web/sql", "web/chat"], "csrf": csrf_of(client)})
    assert merged.status_code == 401  # writes need a token, as on the API
    client.cookies.set("adapterhub_token", "ah_revoked")
    stale = client.get("/ui/")
    assert stale.status_code == 401 and 'adapterhub_token=""' in stale.headers.get("set-cookie", "")


def test_a_hostile_readme_is_rendered_without_scripts_styles_or_handlers(client: TestClient) -> None:
    html = client.get("/ui/adapters/web/evil").text
    card = re.search(r'<article class="markdown">(.*?)</article>', html, re.S).group(1)
    assert "Plain text survives." in card and "<h1>Evil card</h1>" in card
    lowered = card.lower()
    for bad in FORBIDDEN:
        assert bad.lower() not in lowered, bad
    assert "javascript:" not in re.sub(r">[^<]*<", "><", lowered)  # in no attribute (text may say it)


@pytest.mark.parametrize("path", [
    "/ui/?limit=abc", "/ui/?limit=0", "/ui/?sort=nope", "/ui/?cursor=%%%garbage", "/ui/?offset=-1&sort=accuracy",
    "/ui/adapters/web/none", "/ui/adapters/web/%00", "/ui/adapters/x/" + "y" * 300, "/ui/jobs/nope",
    "/ui/jobs/nope/status", "/ui/?q=" + "x" * 500, "/ui/compare?a=web/sql&a=../../etc",
])
def test_bad_input_is_a_4xx_page_never_a_500(client: TestClient, path: str) -> None:
    response = client.get(path)
    assert 400 <= response.status_code < 500, (path, response.status_code, response.text[:500])
    assert "Traceback" not in response.text
    assert "content-security-policy" in response.headers


def test_bad_merge_forms_are_4xx(served: tuple[Any, dict[str, str]]) -> None:
    app, _ = served
    client = TestClient(app)
    sign_in(client, app.state.hub.create_token(name="web-writer", owner="web")["token"])  # may not read secret/
    csrf = client.cookies.get("adapterhub_csrf")
    for form in ({"a": ["web/sql"]}, {"a": ["web/sql", "web/chat"], "k": "x"},
                 {"a": ["web/sql", "web/chat"], "weights": "1, nan"}, {"a": ["web/sql", "web/chat"], "weights": "1"},
                 {"a": ["web/sql", "web/chat"], "method": "nope"}, {"a": ["web/sql", "web/none"]},
                 {"a": ["web/sql", "secret/plan"]}, {"a": ["web/sql", "web/chat"], "name": "web/sql"}):
        response = client.post("/ui/merge", data={**form, "csrf": csrf}, follow_redirects=False)
        assert 400 <= response.status_code < 500, (form, response.status_code, response.text[:300])
    assert client.post("/ui/route", data={"queries": "", "csrf": csrf}).status_code == 422
    assert client.post("/ui/route", data={"queries": "x", "router": "nope", "csrf": csrf}).status_code == 422
    hidden = client.post("/ui/route", data={"queries": "x", "among": ["web/sql", "secret/plan"], "csrf": csrf})
    assert hidden.status_code == 404 and "secret/plan" in hidden.text  # as a missing repo, the name it was given


def test_the_merge_form_runs_a_job_and_lands_on_the_new_adapter(served: tuple[Any, dict[str, str]]) -> None:
    app, tokens = served
    client = TestClient(app)
    sign_in(client, tokens["admin"])
    form = {"a": ["web/sql", "web/child"], "method": "linear", "weights": "0.5, 0.5", "name": "web/merged-form",
            "csrf": client.cookies.get("adapterhub_csrf")}
    response = client.post("/ui/merge", data=form, follow_redirects=False)
    assert response.status_code == 303 and response.headers["location"].startswith("/ui/jobs/")
    job_url = response.headers["location"]
    other = TestClient(app)
    assert other.get(job_url).status_code == 404  # a job is its submitter's only
    deadline = time.monotonic() + 60
    while not (status := client.get(job_url + "/status").json())["done"]:
        assert time.monotonic() < deadline, status
        page = client.get(job_url, follow_redirects=False)
        assert page.status_code in (200, 303) and "Traceback" not in page.text
        time.sleep(0.1)
    assert status["status"] == "succeeded", status
    assert status["adapter_url"] == "/ui/adapters/web/merged-form"
    page = client.get(job_url, follow_redirects=False)
    assert page.status_code == 303 and page.headers["location"] == "/ui/adapters/web/merged-form"
    assert "web/merged-form" in names_on(client.get("/ui/").text)


def test_a_failed_merge_job_says_why_on_its_page(served: tuple[Any, dict[str, str]]) -> None:
    app, _ = served
    client = TestClient(app)
    sign_in(client, app.state.hub.create_token(name="web-failer", owner="web")["token"])
    form = {"a": ["web/sql", "web/chat"], "method": "linear", "csrf": client.cookies.get("adapterhub_csrf")}
    job_url = client.post("/ui/merge", data=form, follow_redirects=False).headers["location"]
    deadline = time.monotonic() + 60
    while not client.get(job_url + "/status").json()["done"]:
        assert time.monotonic() < deadline
        time.sleep(0.1)
    page = client.get(job_url)
    assert page.status_code == 200 and 'data-done="true"' in page.text and "different base models" in page.text
