"""The `.env` file: which one is read, and the keys in it that look like a mistyped setting."""

from __future__ import annotations

import difflib
from pathlib import Path

from dotenv import dotenv_values, find_dotenv, load_dotenv

BESIDE_THE_APP = Path(__file__).resolve().parent.parent / ".env"
# Variables that belong to the tools around us, never a typo of ours.
OTHERS = ("FLASK_APP", "FLASK_DEBUG", "PYTHONPATH", "WEB_CONCURRENCY", "PORT")


def find() -> str | None:
    """`.env` in the working folder or above (as `flask` looks), else the one beside the app."""
    found = find_dotenv(usecwd=True)
    if found:
        return found
    return str(BESIDE_THE_APP) if BESIDE_THE_APP.is_file() else None


def read_dotenv() -> str | None:
    """Load the `.env` file found (variables already set win); its path, or None."""
    path = find()
    if path:
        load_dotenv(path)
    return path


def typo_notes(path: str | None, known: tuple[str, ...]) -> tuple[str, ...]:
    """A sentence for each key in `path` that is not a setting but resembles one."""
    if not path:
        return ()
    notes = []
    for key in dotenv_values(path):
        if key in known or key in OTHERS:
            continue
        close = difflib.get_close_matches(key, known, n=1, cutoff=0.75)
        if close:
            notes.append(f"{path} sets {key}, which is not a setting: did you mean {close[0]}?")
    return tuple(notes)
