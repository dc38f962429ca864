"""The nightly workflow's health check: ask the app's GET /api/cron/status and fail on a warning.

Reads APP_URL and CRON_SECRET from the environment. Writes the answer to the job's summary
($GITHUB_STEP_SUMMARY, when set) and each warning as an error annotation; exits 1 when the app is
unhealthy or could not be asked, so GitHub e-mails the repository's owner. Standard library only:
the workflow runs it without installing the app.
"""

from __future__ import annotations

import json
import os
import sys
import urllib.error
import urllib.request

TIMEOUT = 60  # seconds: a cold start on Vercel plus the status queries


def ask(app_url: str, secret: str) -> tuple[int, dict]:
    """(HTTP status, JSON body) of the status endpoint; status 0 when it could not be reached."""
    url = app_url.rstrip("/") + "/api/cron/status"  # main() allowed only http(s) URLs
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {secret}"})  # noqa: S310
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT) as response:  # noqa: S310
            return response.status, json.load(response)
    except urllib.error.HTTPError as exc:
        return exc.code, _body(exc)
    except (urllib.error.URLError, OSError, ValueError) as exc:
        return 0, {"error": f"could not ask the app ({type(exc).__name__})"}


def _body(response) -> dict:
    try:
        return json.load(response)
    except ValueError:
        return {}


def problems(code: int, answer: dict) -> list[str]:
    """What to tell the club: the warnings, or why the app could not say."""
    if code == 401:
        return ["the app refused the CRON_SECRET secret: set it to the app's CRON_SECRET"]
    if code != 200:
        return [f"the status endpoint answered {code or 'nothing'}: {answer.get('error', '?')}"]
    return [] if answer.get("healthy") else list(answer.get("warnings") or ["unhealthy"])


def report(found: list[str]) -> str:
    """The job summary, in Markdown."""
    if not found:
        return "### strava-sync is healthy\n"
    return "### strava-sync needs attention\n\n" + "".join(f"- {w}\n" for w in found)


def main() -> int:
    app_url, secret = os.environ.get("APP_URL"), os.environ.get("CRON_SECRET")
    if not app_url or not secret or not app_url.startswith(("https://", "http://")):
        print("::error::Set the STRAVA_SYNC_URL variable (https://...) and the CRON_SECRET secret")
        return 1
    found = problems(*ask(app_url, secret))
    summary = os.environ.get("GITHUB_STEP_SUMMARY")
    if summary:
        with open(summary, "a", encoding="utf-8") as out:
            out.write(report(found))
    for warning in found:
        print(f"::error::{warning}")
    if not found:
        print("strava-sync is healthy")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
