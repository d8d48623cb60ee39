"""A deliberately naive year lock, kept so that the concurrency checks are shown to fail without the real one.

`NAIVE_LOCK_YEAR` stands in for PostgresStatements.lock_year (the PostgreSQL settlement transaction's first
statement) but takes no lock: it creates the person's year row if needed and reads it as a display would (read,
compute, write). test_cap_race_read_before_write patches it in and asserts that the cap check then breaks, with
the real lock as its control.
"""

from __future__ import annotations

# ON CONFLICT DO NOTHING takes no lock on an existing row; the schedule's lock is not taken either. A row another
# transaction is creating is not in this statement's snapshot: it reads as 0 admissions, stale as a naive read is.
NAIVE_LOCK_YEAR = """
WITH created AS (
    INSERT INTO person_years (id_number, year, admissions) VALUES (%(id_number)s, %(year)s, 0)
    ON CONFLICT (id_number, year) DO NOTHING RETURNING admissions)
SELECT COALESCE((SELECT admissions FROM created),
                (SELECT admissions FROM person_years WHERE id_number = %(id_number)s AND year = %(year)s), 0)
"""
