"""Scheduled work, run by `settlement scheduler` in its own process (never inside the API workers): the nightly
reconciliation of the previous business day, the monthly clearing, and the catch-up of runs missed while the
scheduler was down (see settlement.jobs.scheduler)."""
