"""The web pages in a real browser: headless Debian Chromium driven by selenium against a server on
loopback. The catalog lists the shipped adapters, search narrows it, an adapter page draws its
lineage and metrics, the merge form makes an adapter that then appears in the list (``app.js``
follows the job), the route form answers with adapters and weights, a hostile README runs nothing,
and signed out a private repo is nowhere.

Skipped where ``/usr/bin/chromium`` is missing, except under CI (``CI`` set), where that fails.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from typing import Any

import pytest

from adapterhub.app import AdapterHub
from adapterhub.server import create_app
from tests.helpers import live_server
from tests.server.webhelpers import CHROMEDRIVER, CHROMIUM, chromium_driver, import_shipped, make_web_catalog

pytestmark = pytest.mark.slow


def _need_browser() -> None:
    missing = [str(p) for p in (CHROMIUM, CHROMEDRIVER) if not p.exists()]
    try:
        import selenium  # noqa: F401
    except ImportError:
        missing.append("the selenium package")
    if missing:
        why = f"no browser for the web tests: {', '.join(missing)} missing (apt-get install chromium chromium-driver)"
        if os.environ.get("CI"):
            pytest.fail(why)  # CI installs them: a missing browser must not pass as a skip
        pytest.skip(why)


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    _need_browser()
    tmp = tmp_path_factory.mktemp("webbrowser")
    hub = AdapterHub(tmp / "home")
    shipped = import_shipped(hub)
    tokens = make_web_catalog(hub, tmp)
    driver = None
    try:
        with live_server(create_app(hub)) as url:
            driver = chromium_driver(tmp / "profile")
            driver.set_page_load_timeout(30)
            yield {"url": url, "driver": driver, "shipped": shipped, "tokens": tokens, "hub": hub}
    finally:
        if driver is not None:
            driver.quit()
        hub.jobs.shutdown()
        hub.close()


@pytest.fixture
def browser(site: dict[str, Any]) -> Any:
    """The driver, signed out (no cookies) on a blank page."""
    driver = site["driver"]
    driver.get(site["url"] + "/ui/static/app.css")  # cookies are per site: be on it to clear them
    driver.delete_all_cookies()
    return driver


def listed(driver: Any) -> list[str]:
    from selenium.webdriver.common.by import By

    return [row.get_attribute("data-name") for row in driver.find_elements(By.CSS_SELECTOR, "tr.adapter-row")]


def wait_for(condition: Any, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)


def sign_in(site: dict[str, Any], token: str) -> None:
    from selenium.webdriver.common.by import By

    driver = site["driver"]
    driver.get(site["url"] + "/ui/signin")
    driver.find_element(By.ID, "token").send_keys(token)
    driver.find_element(By.ID, "signin-submit").click()
    wait_for(lambda: driver.find_elements(By.ID, "signed-in"), 20)


def test_the_catalog_lists_the_shipped_adapters(site: dict[str, Any], browser: Any) -> None:
    browser.get(site["url"] + "/")  # the front page redirects to the catalog
    names = listed(browser)
    assert len(site["shipped"]) == 7 and set(site["shipped"]) <= set(names)
    assert browser.title == "Catalog · adapterhub"


def test_search_narrows_the_list(site: dict[str, Any], browser: Any) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    browser.get(site["url"] + "/ui/")
    box = browser.find_element(By.ID, "q")
    box.send_keys("animal-class")
    browser.find_element(By.ID, "search").click()
    wait_for(lambda: "q=animal-class" in browser.current_url, 20)
    assert listed(browser) == ["library/wn-animal-class"]
    browser.get(site["url"] + "/ui/")
    Select(browser.find_element(By.ID, "f-tag")).select_by_visible_text("library")
    browser.find_element(By.ID, "search").click()
    wait_for(lambda: "tag=library" in browser.current_url, 20)
    assert sorted(listed(browser)) == sorted(site["shipped"])


def test_an_adapter_page_shows_its_lineage_graph_and_metrics(site: dict[str, Any], browser: Any) -> None:
    from selenium.webdriver.common.by import By

    browser.get(site["url"] + "/ui/adapters/web/child")
    graph = browser.find_element(By.CSS_SELECTOR, "#lineage svg.lineage")
    assert graph.is_displayed() and graph.size["width"] > 300
    labels = [t.text for t in graph.find_elements(By.CSS_SELECTOR, "text.label")]
    assert {"web/child", "merge:lego", "web/sql", "web/chat"} <= set(labels)
    browser.get(site["url"] + "/ui/adapters/library/wn-pos")
    rows = browser.find_elements(By.CSS_SELECTOR, "#metrics tr.metric-row")
    assert rows and any("accuracy" in r.text for r in rows)
    assert browser.find_element(By.CSS_SELECTOR, "#lineage svg.lineage").is_displayed()


def test_the_merge_form_creates_an_adapter_that_then_appears_in_the_list(site: dict[str, Any], browser: Any) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    sign_in(site, site["tokens"]["admin"])
    browser.get(site["url"] + "/ui/compose")
    adapters = Select(browser.find_element(By.ID, "merge-adapters"))
    adapters.select_by_value("library/wn-pos")
    adapters.select_by_value("library/wn-animal-class")
    Select(browser.find_element(By.ID, "merge-method")).select_by_value("linear")
    browser.find_element(By.ID, "merge-weights").send_keys("0.5, 0.5")
    browser.find_element(By.ID, "merge-name").send_keys("web/browser-merge")
    browser.find_element(By.ID, "merge-submit").click()
    wait_for(lambda: browser.current_url.endswith("/ui/adapters/web/browser-merge"))  # app.js followed the job
    assert browser.find_element(By.ID, "adapter-name").text == "web/browser-merge"
    browser.get(site["url"] + "/ui/")
    assert "web/browser-merge" in listed(browser)


def test_a_hostile_readme_executes_nothing(site: dict[str, Any], browser: Any) -> None:
    from selenium.common.exceptions import NoAlertPresentException
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By

    browser.get(site["url"] + "/ui/adapters/web/evil")
    card = browser.find_element(By.CSS_SELECTOR, "#model-card article")
    assert "Plain text survives." in card.text
    for link_id in ("evil-link", "evil-link-2"):
        for link in browser.find_elements(By.ID, link_id):
            assert not (link.get_attribute("href") or "").lower().strip().startswith("javascript")
            link.click()
    for target in browser.find_elements(By.CSS_SELECTOR, "#model-card article *"):
        if target.is_displayed():
            ActionChains(browser).move_to_element(target).perform()
    time.sleep(0.3)
    assert browser.execute_script("return window.__pwned === undefined")
    assert browser.title == "web/evil · adapterhub"
    assert browser.execute_script("return getComputedStyle(document.body).display") != "none"  # no README <style>
    assert not browser.find_elements(By.CSS_SELECTOR, "#model-card iframe, #model-card object, #model-card form")
    with pytest.raises(NoAlertPresentException):
        browser.switch_to.alert.text  # noqa: B018


def test_signed_out_a_private_repo_is_invisible(site: dict[str, Any], browser: Any) -> None:
    from selenium.webdriver.common.by import By

    for path in ("/ui/", "/ui/?q=secret", "/ui/?sort=accuracy", "/ui/compare", "/ui/compose"):
        browser.get(site["url"] + path)
        assert "secret/plan" not in browser.page_source and "secret-tag" not in browser.page_source, path
    browser.get(site["url"] + "/ui/adapters/secret/plan")
    assert "404" in browser.find_element(By.ID, "error").text
    browser.get(site["url"] + "/ui/adapters/web/heir")
    graph = browser.find_element(By.CSS_SELECTOR, "#lineage svg.lineage")
    assert "hidden" in [t.text for t in graph.find_elements(By.CSS_SELECTOR, "text.label")]
    assert "secret/plan" not in browser.page_source
    sign_in(site, site["tokens"]["owner"])
    browser.get(site["url"] + "/ui/")
    assert "secret/plan" in listed(browser)


def test_the_route_form_answers_with_adapters_and_weights(site: dict[str, Any], browser: Any) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    browser.get(site["url"] + "/ui/compose")
    browser.find_element(By.ID, "route-queries").send_keys("a small furry animal that hunts mice")
    among = Select(browser.find_element(By.ID, "route-among"))
    for name in site["shipped"]:  # the library adapters carry the example inputs the router needs
        among.select_by_value(name)
    browser.find_element(By.ID, "route-submit").click()
    wait_for(lambda: browser.find_elements(By.ID, "routes") or browser.find_elements(By.ID, "error"), 300)
    rows = browser.find_elements(By.CSS_SELECTOR, "#routes tbody tr")
    assert len(rows) == 1 and "library/" in rows[0].text, browser.page_source[:2000]
    assert "library/wn-animal-class" in rows[0].text  # the animal task leads for an animal query
