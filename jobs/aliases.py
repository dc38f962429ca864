"""Jobs queued under an earlier release's names still run: RQ's Job with an alias map.

RQ stores a job's function and failure callback as dotted names and imports them when the job
runs. The modules moved (the flat layout, then `jobs/__init__.py` split), so a job that an earlier
release queued or scheduled (a fetch waiting for tomorrow's budget, say) would fail to import.
`AliasJob` runs those names as today's functions; `worker.Worker` and the inline runner use it.
Kept for one release after the split: by then every job queued before the upgrade has run.
"""

from __future__ import annotations

from rq.job import Job

import services
from jobs import backfill, catchup, failures, fetch, history, recovery, sweep


def recover_once() -> dict | None:
    """An old release's recurring recovery job: run the pass if due, and schedule no successor."""
    return recovery.run_if_due(services.current())


ALIASES = {
    # The flat layout's names; the folders' names for backfill, history, catch-up and the
    # failure callback (jobs.backfill.backfill_rider, ...) are still today's.
    "jobs.sync_activity": fetch.sync_activity,
    "jobs.revoke_athlete": fetch.revoke_athlete,
    "jobs.reconcile_rider": sweep.reconcile_rider,
    "jobs.recover": recover_once,
    "backfill.backfill_rider": backfill.backfill_rider,
    "history.verify_history": history.verify_history,
    "catchup.catch_up_athlete": catchup.catch_up_athlete,
    "failures.mark_failed": failures.mark_failed,
}


class AliasJob(Job):
    """An RQ job that resolves an earlier release's function and callback names."""

    @property
    def func(self):
        """The job's function, through the alias map when it has an old name."""
        return ALIASES.get(self.func_name) or super().func

    @property
    def failure_callback(self):
        """The failure callback, through the alias map when it has an old name."""
        old = ALIASES.get(self._failure_callback_name or "")
        return old or super().failure_callback
