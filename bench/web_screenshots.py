"""Screenshots of the web pages (PNG, for ``docs/web.md``), taken with headless Debian Chromium.

Run (needs ``apt-get install chromium chromium-driver`` and ``pip install selenium``):

    python bench/web_screenshots.py            # writes docs/web_*.png
    python bench/web_screenshots.py --out /tmp/shots

The catalog is ``web_bench``'s demo catalog (the shipped adapters and two merges of them), served on
loopback; the browser signs in with a fresh operator token for the compose page only.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from web_bench import demo_catalog, serving  # noqa: E402  (a sibling script)

SHOTS = {
    "web_catalog.png": "/ui/?sort=accuracy",
    "web_adapter.png": "/ui/adapters/demo/lego-k8",
    "web_compare.png": "/ui/compare?a=library/wn-pos&a=library/wn-animal-class&a=demo/lego-k8",
    "web_compose.png": "/ui/compose?a=library/wn-pos&a=library/wn-animal-class",
}
ROUTE_QUERIES = ("a small furry animal that hunts mice", "¿Dónde está la biblioteca?", "quickly; in a fast manner")
FLAGS = ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run", "--hide-scrollbars")
WIDTH, MAX_HEIGHT = 1280, 2000


def driver(profile: Path) -> Any:
    """Debian's Chromium and chromedriver (given explicitly: Selenium Manager downloads nothing)."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for flag in (*FLAGS, f"--user-data-dir={profile}", f"--window-size={WIDTH},900"):
        options.add_argument(flag)
    return webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)


def shoot(browser: Any, url: str, path: Path) -> None:
    """The whole page (up to ``MAX_HEIGHT`` pixels) as a PNG."""
    browser.set_window_size(WIDTH, 900)
    browser.get(url)
    height = min(MAX_HEIGHT, int(browser.execute_script("return document.documentElement.scrollHeight")))
    browser.set_window_size(WIDTH, max(600, height + 140))  # the window's own frame takes some height
    time.sleep(0.2)
    browser.save_screenshot(str(path))


def route_shot(browser: Any, url: str, path: Path) -> None:
    """The compose page after the route form answered a few queries (needs the MiniLM base)."""
    from selenium.webdriver.support.ui import WebDriverWait

    browser.set_window_size(WIDTH, 900)
    browser.get(url + "/ui/compose")
    from selenium.webdriver.support.ui import Select

    browser.find_element("id", "route-queries").send_keys("\n".join(ROUTE_QUERIES))
    among = Select(browser.find_element("id", "route-among"))
    for option in among.options:
        if option.get_attribute("value").startswith("library/"):  # the ones with example inputs
            among.select_by_value(option.get_attribute("value"))
    browser.find_element("id", "route-submit").click()
    WebDriverWait(browser, 300).until(lambda b: b.find_elements("id", "routes") or b.find_elements("id", "error"))
    height = min(MAX_HEIGHT, int(browser.execute_script("return document.documentElement.scrollHeight")))
    browser.set_window_size(WIDTH, max(600, height + 140))
    time.sleep(0.2)
    browser.save_screenshot(str(path))
    print(f"wrote {path}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parents[1] / "docs")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="adapterhub-web-shots-") as tmp:
        hub = demo_catalog(Path(tmp) / "home")
        token = hub.create_token(name="operator", admin=True)["token"]
        browser = driver(Path(tmp) / "profile")
        try:
            with serving(hub) as url:
                for name, path in SHOTS.items():
                    if name == "web_compose.png":  # signed in: the merge form is enabled
                        browser.get(url + "/ui/signin")
                        browser.find_element("id", "token").send_keys(token)
                        browser.find_element("id", "signin-submit").click()
                        time.sleep(0.3)
                    shoot(browser, url + path, args.out / name)
                    print(f"wrote {args.out / name}")
                route_shot(browser, url, args.out / "web_route.png")
        finally:
            browser.quit()
            hub.close()


if __name__ == "__main__":
    main()
