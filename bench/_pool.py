"""Worker processes for bench/day.py: N burst workers forked from the benchmark, on its clock.

Each child is a copy of the benchmark's process taken after the world is built: it shares the
real Redis and database (so it needs --redis-url and --database-url), reads the driven clock's
offset from shared memory, and runs a burst pass whenever the parent asks, reporting the jobs it
ran and what they cost when the run ends.
"""

from __future__ import annotations

import multiprocessing
import os
import resource
import threading
from collections import Counter

import services
from strava_sim.clock import SimClock


class WorkerPool:
    """`size` forked processes, each running one worker's burst passes when told."""

    def __init__(self, svc, clock: SimClock, make_worker, size: int):
        self.clock = clock
        self.offset = multiprocessing.Value("d", clock._offset, lock=False)
        context = multiprocessing.get_context("fork")
        self.pipes = []
        for _ in range(size):
            parent, child = context.Pipe()
            context.Process(target=self._serve, args=(svc, make_worker, child), daemon=True).start()
            self.pipes.append(parent)

    def _serve(self, svc, make_worker, pipe) -> None:
        """The child: fresh pools, the shared clock, then passes until told to stop."""
        svc.engine.dispose(close=False)  # the parent's pooled connections are the parent's
        self.clock._lock = threading.Lock()  # another thread may have held it at the fork
        offset = self.offset
        SimClock._offset = property(lambda _: offset.value, lambda *_: None)
        worker = make_worker()
        while pipe.recv() == "run":
            with services.bind(svc):
                worker.work(burst=True, logging_level="WARNING")
            pipe.send("done")
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        pipe.send((worker.ran, worker.costs, peak))
        pipe.close()
        os._exit(0)  # no atexit or finally of the parent's: they would close its servers

    def run_pass(self) -> None:
        """One burst pass in every worker at the clock's time, returning when all are done."""
        self.offset.value = self.clock._offset
        for pipe in self.pipes:
            pipe.send("run")
        for pipe in self.pipes:
            pipe.recv()

    def stop(self) -> tuple[Counter, Counter, float]:
        """Stop the workers: (jobs run by function, their costs, the largest peak RSS in MiB)."""
        ran, costs, peak = Counter(), Counter(), 0.0
        for pipe in self.pipes:
            pipe.send("stop")
            child_ran, child_costs, child_peak = pipe.recv()
            ran.update(child_ran)
            costs.update(child_costs)
            peak = max(peak, child_peak)
        return ran, costs, peak
