"""Release ids and the pipeline's dates: one definition each, used by every room."""
from __future__ import annotations

import datetime as dt


def release_id_for(as_of: dt.date) -> str:
    """The id of the release whose data ends on ``as_of``."""
    return f"rel-{as_of.isoformat()}"


def as_date(as_of: str | dt.date | dt.datetime) -> dt.date:
    if isinstance(as_of, dt.datetime):
        return as_of.date()
    if isinstance(as_of, dt.date):
        return as_of
    return dt.datetime.fromisoformat(str(as_of)).date()


def at_of(as_of: dt.date) -> str:
    """The logical date of a pipeline action: the end of its data interval. Audit rows carry it as
    ``logical_date``; their ``at`` is the wall clock, so the log reads in the order things happened."""
    return f"{as_of.isoformat()}T00:00:00+00:00"
