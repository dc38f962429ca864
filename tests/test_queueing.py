"""Every job is queued by reference to its function: no dotted string hides an import cycle."""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("jobs", "web", "webhook", "cli", "sync", "reconcile", "services")
ENTRY_POINTS = ("worker.py", "app.py")
QUEUEING_CALLS = {"enqueue", "enqueue_at", "enqueue_in", "queue_rider_job", "enqueue_call"}


def queued_by_name(path: Path) -> list[str]:
    """Calls in a file that queue a job whose function is given as a string."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if not isinstance(node, ast.Call):
            continue
        name = getattr(node.func, "attr", getattr(node.func, "id", None))
        if name not in QUEUEING_CALLS:
            continue
        strings = [a for a in node.args if isinstance(a, ast.Constant) and isinstance(a.value, str)]
        if strings:
            found.append(f"{path.relative_to(ROOT)}:{node.lineno} {strings[0].value!r}")
    return found


def test_no_job_is_queued_by_a_dotted_string():
    files = [p for package in PACKAGES for p in sorted((ROOT / package).rglob("*.py"))]
    files += [ROOT / name for name in ENTRY_POINTS]
    assert [hit for path in files for hit in queued_by_name(path)] == []
