"""The job side: what workers run, and how the web and the CLI queue it.

`queueing` (enqueue options, job ids) is the bottom; `fetch` (an event's activity fetch and
revocation check), `catchup`, `backfill`, `history` and `sweep` hold the jobs and queue them by
reference; `recovery` re-queues what Redis lost; `aliases` runs jobs queued under old names.
"""
