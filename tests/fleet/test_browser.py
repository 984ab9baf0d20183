"""The web view in a real browser: `aishell serve --http` as a child process over a fleet
of four SQLite targets (tests/fleet/builders.py), and Debian's headless Chromium driven
by Selenium through Debian's chromedriver (nothing downloaded). It opens the fleet page,
follows the failed run's link to its steps and error, and opens the waiting approvals;
each page is saved as a screenshot under the test's folder (and copied to
$AISHELL_ARTIFACTS when that is set); a POST changes nothing in the store."""

from __future__ import annotations

import os
import shutil
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver

from aishell.config.models import Config
from tests.conftest import EditConfig
from tests.fleet.builders import (
    RUN_IDS,
    WAITING_REASON,
    build_fleet,
    fleet_config,
    row_counts,
)
from tests.fleet.served import serving
from tests.services import unavailable

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")


@pytest.fixture
def served(
    edit_config: EditConfig, home: Path, demo_template: Path
) -> Iterator[tuple[Config, str]]:
    """The fleet's home served on a port the system picks; its URL."""
    config = fleet_config(edit_config, home, demo_template)
    build_fleet(config)
    with serving(home) as (_serve, url):
        yield config, url


@pytest.fixture
def browser(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[WebDriver]:
    if not CHROMIUM.exists() or not CHROMEDRIVER.exists():
        unavailable(
            "Debian's chromium and chromium-driver are not installed (.ci/run installs them)"
        )
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    monkeypatch.setenv("SE_OFFLINE", "true")  # Selenium Manager downloads nothing
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for argument in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--window-size=1280,800",
        f"--user-data-dir={tmp_path / 'chromium-profile'}",
    ):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    try:
        yield driver
    finally:
        driver.quit()


def _shot(driver: WebDriver, folder: Path, name: str) -> None:
    folder.mkdir(exist_ok=True)
    path = folder / f"{name}.png"
    assert driver.save_screenshot(str(path)), name
    wanted = os.environ.get("AISHELL_ARTIFACTS")
    if wanted:
        Path(wanted).mkdir(parents=True, exist_ok=True)
        shutil.copy(path, Path(wanted) / f"web-{name}.png")


def test_a_browser_sees_the_fleet_a_failed_run_and_a_waiting_approval(
    served: tuple[Config, str], browser: WebDriver, tmp_path: Path
) -> None:
    config, url = served
    driver = browser
    shots = tmp_path / "screenshots"
    before = row_counts(config)

    driver.get(url)
    fleet = driver.find_element(By.ID, "fleet")
    rows = {
        row.find_element(By.TAG_NAME, "td").text: row.text
        for row in fleet.find_elements(By.CSS_SELECTOR, "tbody tr")
    }
    assert list(rows) == ["alpha", "beta", "gamma", "idle"]
    assert "completed" in rows["alpha"] and "never ran" in rows["idle"]
    assert "failed" in rows["beta"] and "waiting_approval" in rows["gamma"]
    _shot(driver, shots, "fleet")

    fleet.find_element(By.CSS_SELECTOR, f"a[href='/runs/{RUN_IDS['beta']}']").click()
    steps = driver.find_element(By.ID, "steps")
    failed = [row.text for row in steps.find_elements(By.CSS_SELECTOR, "tbody tr")]
    assert len(failed) == 2 and "check_table_corruption" in failed[1]
    assert (
        "failed" in failed[1] and "database disk image is malformed <b>not markup</b>" in failed[1]
    )
    error = driver.find_element(By.ID, "run-error").text
    assert error.startswith("step_1 failed: database disk image is malformed")
    _shot(driver, shots, "failed-run")

    driver.find_element(By.LINK_TEXT, "Approvals").click()
    waiting = driver.find_element(By.ID, "approvals").text
    assert RUN_IDS["gamma"] in waiting and WAITING_REASON in waiting
    assert "rebuild_fragmented_indexes" in waiting
    _shot(driver, shots, "approvals")
    assert sorted(p.name for p in shots.iterdir()) == [
        "approvals.png",
        "failed-run.png",
        "fleet.png",
    ]

    posted = urllib.request.Request(
        f"{url}runs/{RUN_IDS['gamma']}", data=b"decision=approve", method="POST"
    )
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(posted, timeout=30)
    assert refused.value.code == 405
    assert row_counts(config) == before
