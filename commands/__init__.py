"""The `flask --app app strava ...` commands, a module per concern; `cli.py` registers them.

`plain` (known failures as one sentence), `runs` (reconcile, backfill, waiting on workers),
`report` (status, riders, leaderboard), `simulate` (the simulator as a process).
"""
