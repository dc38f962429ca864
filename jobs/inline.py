"""Inline mode's worker: queued jobs run in a background thread of this process.

With no REDIS_URL the whole system runs in one process (development, the demo, a newcomer's first
run): Redis is an in-process stand-in and this thread plays the part of `worker.Worker`, recovery
pass included. The app makes the runner; the first job queued starts its thread.
"""

from __future__ import annotations

import threading
import time

from rq import SimpleWorker
from rq.registry import StartedJobRegistry
from rq.timeouts import TimerDeathPenalty

import services
from jobs import recovery
from jobs.aliases import AliasJob
from services import QUEUES, Services

_start_lock = threading.Lock()


class InlineWorker(SimpleWorker):
    """An RQ worker that runs in a thread: no signal handlers, timeouts by timer."""

    death_penalty_class = TimerDeathPenalty
    job_class = AliasJob

    def _install_signal_handlers(self):
        pass  # signals can only be handled on the main thread; inline mode has no shutdown dance

    def subscribe(self):
        pass  # the pubsub thread carries `rq` admin commands, which a single process does not need


class InlineRunner:
    """Runs queued jobs, and scheduled ones once due, in a background thread of this process."""

    def __init__(self, svc: Services):
        self.svc = svc
        self.passes = 0
        self._wake, self._stop = threading.Event(), threading.Event()
        self._thread = threading.Thread(target=self._run, name="inline-worker", daemon=True)

    def start(self) -> InlineRunner:
        """Start the thread, unless it runs already."""
        with _start_lock:
            if self._thread.ident is None and not self._stop.is_set():
                self._thread.start()
        return self

    def wake(self) -> None:
        """Start the thread if need be, and run a pass now rather than at the next tick."""
        self.start()
        self._wake.set()

    def stop(self) -> None:
        """Finish the current pass and stop."""
        self._stop.set()
        self._wake.set()
        if self._thread.ident is not None:
            self._thread.join()

    def _run(self) -> None:
        worker = InlineWorker([self.svc.queue(n) for n in QUEUES], connection=self.svc.redis)
        while not self._stop.is_set():
            with services.bind(self.svc):
                recovery.run_if_due(self.svc)
                worker.work(burst=True, with_scheduler=True, logging_level="WARNING")
            self.passes += 1
            self._wake.wait(timeout=0.5)  # scheduled jobs (retries, budget waits) come due
            self._wake.clear()

    def busy(self) -> bool:
        """Whether a job is queued or running (scheduled ones wait for their time)."""
        queues = [self.svc.queue(n) for n in QUEUES]
        return any(q.count or StartedJobRegistry(queue=q).count for q in queues)

    def wait_idle(self, timeout: float) -> bool:
        """Wait until no job is queued or running; False if the timeout came first."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.busy():
                # A job may be between its queue and the started registry: let a pass finish.
                seen = self.passes
                while self.passes < seen + 2 and time.monotonic() < deadline:
                    self.wake()
                    time.sleep(0.01)
                if not self.busy():
                    return True
            time.sleep(0.05)
        return False


def start(svc: Services) -> InlineRunner:
    """Start the in-process worker for these services, made here unless the app made it."""
    with _start_lock:
        if svc.runner is None:
            svc.runner = InlineRunner(svc)
    return svc.runner.start()
