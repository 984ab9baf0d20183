"""The web view's Content-Security-Policy lets its pages load their stylesheet alone:
no script, image, frame or connection from anywhere, the view's own origin included
(the pages have none: whatever ever slipped into one as markup would run nothing). In a
real browser the stylesheet still applies under it.

Before, `default-src 'self'` let a page load scripts and images from the view itself."""

from __future__ import annotations

from pathlib import Path

from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver

from aishell.config.models import Config
from tests.conftest import EditConfig
from tests.fleet.builders import build_fleet, fleet_config
from tests.fleet.test_browser import browser, served  # noqa: F401  (fixtures)
from tests.fleet.test_web import client


def _policy(header: str) -> dict[str, str]:
    directives = (part.strip().split(None, 1) for part in header.split(";") if part.strip())
    return {d[0]: d[1] if len(d) > 1 else "" for d in directives}


def test_a_page_may_load_its_stylesheet_alone(
    edit_config: EditConfig, home: Path, demo_template: Path
) -> None:
    config: Config = fleet_config(edit_config, home, demo_template)
    build_fleet(config)
    view = client(config)
    for path in ("/", "/runs", "/static/style.css", "/nope"):
        policy = _policy(view.get(path).headers["content-security-policy"])
        assert policy["default-src"] == "'none'", path
        for fallen_back in ("script-src", "img-src", "connect-src", "frame-src", "object-src"):
            assert fallen_back not in policy, (path, fallen_back)
        assert policy["style-src"] == "'self'", path
        assert policy["frame-ancestors"] == "'none'" and policy["form-action"] == "'none'"


def test_the_stylesheet_applies_in_a_browser(
    served: tuple[Config, str],  # noqa: F811
    browser: WebDriver,  # noqa: F811
) -> None:
    _, url = served
    browser.get(url)
    header = browser.find_element(By.TAG_NAME, "header")
    assert header.value_of_css_property("background-color") == "rgba(36, 52, 71, 1)"
