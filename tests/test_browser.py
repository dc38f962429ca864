"""A real browser (headless Chromium through Selenium) walks the pages against the simulator.

landing -> Connect with Strava (the simulator's consent page) -> /me -> leaderboard -> /admin ->
disconnect, with a screenshot of each page in tests/artifacts/ at 1280 and 390 px, no console
errors, basic accessibility checks (labels, alt text, headings, contrast of the orange button's
text), and no page wider than a 390 px phone. The app and the simulator share a clock frozen at a
fixed noon, so the day's budget and the rides do not depend on the hour the test runs at.
Skipped, saying why, when Chromium, chromedriver or selenium are not installed.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from clocks import NOON, noon_clock
from conftest import LiveServer, configure, connect_rider, make_app, run_jobs

import models
from jobs import backfill
from strava_client.ratebudget import WINDOW, RateBudget

ARTIFACTS = Path(__file__).resolve().parent / "artifacts"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")

try:
    from selenium import webdriver
    from selenium.common.exceptions import StaleElementReferenceException, WebDriverException
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.wait import WebDriverWait
except ImportError:  # pragma: no cover - depends on the machine
    webdriver = None

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(
        webdriver is None or not CHROMIUM or not CHROMEDRIVER,
        reason="the browser test needs selenium (requirements-dev.txt) and Debian's chromium and "
        "chromium-driver packages (apt-get install -y chromium chromium-driver; .ci/run does it)",
    ),
]

FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--disable-dev-shm-usage", "--window-size=1280,900",
)  # fmt: skip
PHONE = (390, 844)  # the narrowest common phone; 360 px ones get the same layout

# Runs in the page: returns a list of accessibility problems (empty when none).
A11Y_SCRIPT = """
const problems = [];
for (const img of document.querySelectorAll('img')) {
  if (!img.hasAttribute('alt')) problems.push('img without alt: ' + img.src);
}
for (const el of document.querySelectorAll('input, select, textarea')) {
  if (el.type === 'hidden') continue;
  const labelled = (el.id && document.querySelector('label[for="' + el.id + '"]'))
    || el.getAttribute('aria-label') || el.closest('label');
  if (!labelled) problems.push('control without a label: ' + (el.name || el.outerHTML));
}
for (const b of document.querySelectorAll('button, a')) {
  const named = b.textContent.trim() || b.getAttribute('aria-label');
  if (!named) problems.push('unnamed ' + b.outerHTML);
}
const levels = [...document.querySelectorAll('h1,h2,h3,h4,h5,h6')].map(h => +h.tagName[1]);
if (levels.filter(l => l === 1).length !== 1) problems.push('not exactly one h1: ' + levels);
levels.forEach((l, i) => {
  if (i && l > levels[i - 1] + 1) problems.push('heading skips a level');
});
if (!document.documentElement.lang) problems.push('no lang on <html>');
if (!document.title) problems.push('no <title>');
return problems;
"""

CONTRAST_SCRIPT = """
const el = arguments[0], style = getComputedStyle(el);
const rgb = s => s.match(/\\d+(\\.\\d+)?/g).slice(0, 3).map(Number);
const lum = c => { const [r, g, b] = c.map(v => { v /= 255;
  return v <= 0.03928 ? v / 12.92 : Math.pow((v + 0.055) / 1.055, 2.4); });
  return 0.2126 * r + 0.7152 * g + 0.0722 * b; };
const [a, b] = [lum(rgb(style.color)), lum(rgb(style.backgroundColor))];
return [style.backgroundColor, (Math.max(a, b) + 0.05) / (Math.min(a, b) + 0.05)];
"""


@pytest.fixture
def browser(monkeypatch):
    """Headless Chromium with a fresh profile, its console log kept."""
    profile = tempfile.mkdtemp(prefix="strava-sync-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (*FLAGS, f"--user-data-dir={profile}"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    monkeypatch.setenv("SE_OFFLINE", "true")  # never let Selenium Manager download anything
    # Chromium hangs under libfaketime, and needs no faked clock: the app it visits has its own.
    real_clock = {
        k: v for k, v in os.environ.items() if not k.startswith(("LD_PRELOAD", "FAKETIME"))
    }
    service = Service(executable_path=CHROMEDRIVER, env=real_clock)
    driver = webdriver.Chrome(options=options, service=service)
    driver.set_page_load_timeout(30)
    driver.implicitly_wait(10)  # a find after a click waits for the next page's element
    yield driver
    driver.quit()
    shutil.rmtree(profile, ignore_errors=True)


def click_and_wait(driver, element) -> None:
    """Click, then wait until the page the click left is gone (a click does not wait for it)."""
    element.click()
    WebDriverWait(driver, 30).until(lambda _: left_the_document(element))


def left_the_document(element) -> bool:
    """Whether the element's page is gone: stale, in Selenium's words or in chromedriver's.

    Asked mid-navigation, chromedriver may answer "Node with given id does not belong to the
    document" instead of Selenium's stale-element error (seen in CI on 2026-12-06).
    """
    try:
        element.is_enabled()
    except StaleElementReferenceException:
        return True
    except WebDriverException as exc:
        if "does not belong to the document" in str(exc):
            return True
        raise
    return False


def visit_checked(driver, name: str) -> None:
    """Check the current page (console, accessibility) and save a full-page screenshot."""
    problems = driver.execute_script(A11Y_SCRIPT)
    assert problems == [], f"{name}: {problems}"
    errors = [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]
    assert errors == [], f"{name}: console errors {errors}"
    ARTIFACTS.mkdir(exist_ok=True)
    driver.set_window_size(*PHONE)
    width, inner = driver.execute_script(
        "return [document.documentElement.scrollWidth, window.innerWidth]"
    )
    assert inner <= PHONE[0] and width <= inner, f"{name} scrolls sideways: {width} > {inner} px"
    screenshot(driver, ARTIFACTS / f"{name}-390.png", PHONE[0])
    screenshot(driver, ARTIFACTS / f"{name}.png", 1280)
    driver.set_window_size(1280, 900)


def screenshot(driver, path: Path, width: int) -> None:
    """Save a full-page screenshot at a width (the window grows to the page's height)."""
    driver.set_window_size(width, 900)
    height = driver.execute_script("return document.documentElement.scrollHeight")
    driver.set_window_size(width, max(900, height + 40))
    driver.save_screenshot(str(path))


def club_history(app, sim, now: datetime) -> None:
    """Riders with a season of rides, for a leaderboard worth looking at."""
    svc = app.extensions["strava_sync"]
    riders = [("Hannah", "Moore", 52), ("Luis", "Ocana", 38), ("Marianne", "Vos", 27)]
    for first, last, longest in riders:
        rider, athlete = connect_rider(app, sim, name=(first, last))
        for day in range(longest + 6):
            ended = now - timedelta(days=day + 1)
            sim.create_activity(
                athlete,
                name=f"Club ride {day}",
                distance=1000.0 * (longest + 10 - day % 7),
                start_date=ended,
                event=False,
            )
        with svc.engine.begin() as conn:
            models.update_connection(conn, rider, backfill_before=None)
        backfill.queue_backfill(svc, rider)


def budget_day(svc, now: float) -> None:
    """Permits taken over the last day through a RateBudget on the app's Redis, for the chart."""
    clock = [now]
    budget = RateBudget(svc.redis, clock=lambda: clock[0], prefix=svc.budget.prefix)
    for window in range(1, 96, 3):
        clock[0] = now - window * WINDOW
        for _ in range(5 + (window * 7) % 40):
            budget.take_permit(lane="bulk")


def admin_shows_the_chart_and_makes_an_invite(browser, url: str) -> None:
    """/admin: warnings first, the day's chart, and an invite link made with its form."""
    browser.get(url + "/admin")
    assert browser.find_element(By.TAG_NAME, "h1").text == "Operator dashboard"
    headings = [h.text for h in browser.find_elements(By.TAG_NAME, "h2")]
    assert headings[:3] == ["Needs you now", "Workers", "Events"], headings
    assert len(browser.find_elements(By.CSS_SELECTOR, "svg rect.bar")) == 96
    click_and_wait(browser, browser.find_element(By.CSS_SELECTOR, "button[type=submit]:not(.link)"))
    assert "/strava/connect?invite=" in browser.find_element(By.ID, "invite-url").text
    visit_checked(browser, "4-admin")


@pytest.fixture
def noon_app(database_url, sim):
    """The app and the simulator on one clock, frozen at a fixed noon (UTC)."""
    sim.clock = noon_clock()
    return make_app(database_url, sim, CLOCK=sim.clock.now)


@pytest.fixture
def noon_live(noon_app):
    server = LiveServer(noon_app)
    yield server
    server.close()


def test_browser_walks_connect_me_leaderboard_admin_and_disconnect(
    noon_app, sim, noon_live, browser
):
    app, live, svc = noon_app, noon_live, noon_app.extensions["strava_sync"]
    now = datetime.fromtimestamp(NOON, UTC)
    club_history(app, sim, now)
    athlete = sim.add_athlete("Ada", "Lovelace")
    for day in range(40):
        sim.create_activity(
            athlete,
            name=f"Morning ride {day}",
            distance=1000.0 * (30 + day % 11),
            start_date=now - timedelta(days=day + 1, hours=3),
            event=False,
        )
    configure(svc, admin_athlete_ids=frozenset({athlete}))
    configure(svc, club_name="Loopback Randonneurs")

    browser.get(live.url + "/")
    assert browser.find_element(By.TAG_NAME, "h1").text == "Loopback Randonneurs"
    button = browser.find_element(By.LINK_TEXT, "Connect with Strava")
    background, ratio = browser.execute_script(CONTRAST_SCRIPT, button)
    assert background == "rgb(252, 76, 2)"  # Strava orange
    assert ratio >= 4.5, f"the orange button's text contrast is {ratio:.2f}:1"
    visit_checked(browser, "1-landing")

    sim.login_as(athlete)
    click_and_wait(browser, button)  # -> the simulator's authorize -> our callback -> /me
    WebDriverWait(browser, 30).until(lambda d: d.current_url == live.url + "/me")
    assert "Ada Lovelace is connected" in browser.page_source
    run_jobs(app)  # the backfills the connections queued
    browser.refresh()
    assert len(browser.find_elements(By.LINK_TEXT, "View on Strava")) == 10
    assert "Powered by Strava" in browser.page_source
    visit_checked(browser, "2-me")

    click_and_wait(browser, browser.find_element(By.LINK_TEXT, "Leaderboard"))
    names = [c.text for c in browser.find_elements(By.CSS_SELECTOR, "tbody th")]
    assert names[0] == "Hannah Moore" and "Ada Lovelace" in names
    visit_checked(browser, "3-leaderboard")

    budget_day(svc, NOON)
    admin_shows_the_chart_and_makes_an_invite(browser, live.url)

    browser.get(live.url + "/nowhere")
    assert browser.find_element(By.TAG_NAME, "h1").text == "Not Found"
    browser.get_log("browser")  # the 404 itself is logged by the console; nothing else may be
    visit_checked(browser, "5-error")

    browser.get(live.url + "/me")
    click_and_wait(browser, browser.find_element(By.PARTIAL_LINK_TEXT, "Disconnect"))
    visit_checked(browser, "6-disconnect-confirm")
    click_and_wait(browser, browser.find_element(By.CSS_SELECTOR, "button.danger"))
    assert "Disconnected" in browser.page_source
    assert sim.requests["POST /oauth/deauthorize"] == 1
    with svc.engine.connect() as conn:
        row = models.get_connection_by_athlete(conn, athlete)
        assert models.rider_activities(conn, row.rider_id) == []
    visit_checked(browser, "7-disconnected")
