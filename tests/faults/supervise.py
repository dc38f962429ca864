"""Restart a command whenever it exits, one second apart, as systemd's `Restart=always` does.

The fault suite runs each `rq worker` under this, because RQ's worker exits for good when Redis
goes away in the middle of a job; production puts the same policy in its process manager.
SIGTERM stops the child warmly and then the supervisor itself.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time


def main(argv: list[str]) -> int:
    """Run argv until SIGTERM, restarting it whenever it exits."""
    state = {"stopping": False, "child": None}

    def stop(signum, frame):
        state["stopping"] = True
        child = state["child"]
        if child is not None and child.poll() is None:
            child.send_signal(signal.SIGTERM)

    signal.signal(signal.SIGTERM, stop)
    restarts = 0
    while not state["stopping"]:
        state["child"] = subprocess.Popen(argv)
        code = state["child"].wait()
        if state["stopping"]:
            break
        restarts += 1
        print(f"supervise: exited with {code}; restart {restarts}", flush=True)
        time.sleep(1)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
