"""Under libfaketime, time.sleep waits on a threading.Event instead (CI's faked-clock runs only).

.ci/run puts this folder on PYTHONPATH only for its runs under faketime, with
FAKETIME_DONT_FAKE_MONOTONIC=1: a faked monotonic clock makes Python's lock and condition
timeouts hang (libfaketime issue #390). With monotonic time left alone, libfaketime 0.9.10 still
shifts clock_nanosleep's absolute monotonic deadline by the fake offset, so time.sleep (which
calls it since Python 3.11) fails with EINVAL (issue #426). Event.wait takes a relative timeout.
"""

import os
import threading
import time

if "faketime" in os.environ.get("LD_PRELOAD", ""):

    def _sleep(seconds: float) -> None:
        """Sleep for `seconds` on a threading.Event's timeout, which libfaketime leaves alone."""
        if seconds < 0:
            raise ValueError("sleep length must be non-negative")
        threading.Event().wait(seconds)

    time.sleep = _sleep
