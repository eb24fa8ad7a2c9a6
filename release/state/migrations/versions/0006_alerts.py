"""Alerts live in the state store: the ``alerts`` table (``at``, the wall clock; ``kind``, ``severity``,
``message``, ``details_json``; ``release_id``, the details' one, indexed; ``once_key``, unique with the kind:
what notify_once announces once, so the database refuses a second one, whichever process races it).

An ``alerts.jsonl`` in FRAUDCD_HOME (where fraud-cd up to 0005 appended its alerts) is imported: every line,
in the file's order, with its own ``at``. notify_once kept its key in the details (``key``: monitoring's day,
check and slice; otherwise ``release_id``) and found it in any earlier line of the kind, so the first line of
each kind and key gets that key as its once_key, the one today's notify_once gives: a rerun after the upgrade
does not announce again. Once the upgrade committed, the file is renamed ``alerts.jsonl.imported``
(``alerts.jsonl.imported.2``, ... when that name is taken) and left there; nothing reads it again.

A line that is not a whole alert (not UTF-8 or not JSON, not an object, a field missing or of the wrong type,
a key the table has no column for) stops the upgrade before anything is imported: the error names the file
and every such line with the start of its text, and the store stays at 0005 with the file where it is. Not
"import the rest and skip them": a migration runs once, and a skipped line is gone from everything people
read (``fraudcd status``, the report index) and from notify_once's memory (a skipped ``release_shipped`` is
announced again). The operator running ``fraudcd db --to head`` is the one person who can say what the line
was, and the fix takes a minute: usually the last line, cut short by a crash while it was written (that alert
was never logged or sent), deleted; anything else, repaired by hand. The upgrade then imports every line.
Nor is such a file new trouble: fraud-cd of 0005 could not read it either (each notify_once, the report
index, failed on it). A store created where such a file lies (the upgrade from nothing to head) is refused
the same way.

Idempotent, like 0002 to 0005: a store that has the table keeps it and imports nothing. The downgrade writes
every row back to ``alerts.jsonl`` in the form fraud-cd of 0005 reads and writes (so it does not announce
again what was announced), renamed into place once the downgrade committed, then drops the table; it refuses
to overwrite an ``alerts.jsonl`` that is there already.

Revision ID: 0006
Revises: 0005
"""
from __future__ import annotations

import json
import os

import sqlalchemy as sa
from alembic import context, op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

FILE = "alerts.jsonl"
SEVERITIES = ("error", "warning", "info")
KEY_FIELDS = ("key", "release_id")  # where notify_once of 0005 kept its key: monitoring's, then a release's
SHOWN = 10  # malformed lines named in the error


def _legacy_file():
    from release.core.settings import paths

    return paths().home / FILE


def _after_commit(step) -> None:
    """Run ``step`` once the schema move committed (release.state.store.migrate), or now under a bare Alembic."""
    steps = context.config.attributes.get("after_commit")
    if steps is None:
        step()
    else:
        steps.append(step)


def _problem(a) -> str | None:
    """What keeps one parsed line from being an alert row, or None."""
    if not isinstance(a, dict):
        return f"a JSON {type(a).__name__}, not an object"
    extra = sorted(set(a) - {"at", "kind", "severity", "message", "details"})
    if extra:
        return f"it has fields the table has no column for: {', '.join(map(repr, extra))}"
    for name, limit in (("at", 40), ("kind", 100)):
        if not isinstance(a.get(name), str) or not a[name].strip() or len(a[name]) > limit:
            return f"its {name!r} is not text of 1 to {limit} characters"
    if a.get("severity") not in SEVERITIES:
        return f"its severity {a.get('severity')!r} is not one of {', '.join(SEVERITIES)}"
    if not isinstance(a.get("message"), str):
        return "its 'message' is not text"
    if not isinstance(a.get("details", {}), dict):
        return "its 'details' is not an object"
    return None


def _read(path) -> list[dict]:
    """Every alert of the file, in order; ValueError naming every line that is not one (nothing is read then)."""
    alerts, bad = [], []
    for no, raw in enumerate(path.read_bytes().split(b"\n"), start=1):
        if not raw.strip():
            continue
        try:
            a = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            problem = f"not {'UTF-8' if isinstance(e, UnicodeDecodeError) else 'JSON'} ({e})"
        else:
            problem = _problem(a)
        if problem:
            text = raw.decode("utf-8", "replace")
            bad.append(f"line {no}: {problem}: {text[:80]!r}{'...' if len(text) > 80 else ''}")
        else:
            alerts.append(a)
    if bad:
        more = f"; and {len(bad) - SHOWN} more" if len(bad) > SHOWN else ""
        raise ValueError(
            f"Cannot import {path} into the state store's alerts table (migration 0006): {len(bad)} of its lines "
            f"{'is' if len(bad) == 1 else 'are'} not an alert: " + "; ".join(bad[:SHOWN]) + more + ". Nothing was "
            "imported or changed: the store stays at its revision and the file where it is. Repair or delete "
            "those lines (a last line cut short is an alert a crash interrupted while it was written: it was "
            "never logged or sent), then run `fraudcd db --to head` again.")
    return alerts


def _rows(found: list[dict]) -> list[dict]:
    rows, seen = [], set()
    for a in found:
        details = a.get("details") or {}
        key = next((details[f] for f in KEY_FIELDS if isinstance(details.get(f), str) and details[f]), None)
        once = key if key is not None and (a["kind"], key) not in seen else None
        seen.add((a["kind"], key))
        rid = details.get("release_id")
        rows.append(dict(at=a["at"], kind=a["kind"], severity=a["severity"], message=a["message"],
                         details_json=json.dumps(details, sort_keys=True), once_key=once,
                         release_id=rid if isinstance(rid, str) and len(rid) <= 40 else None))
    return rows


def _free_name(path):
    target, n = path.with_name(path.name + ".imported"), 1
    while target.exists():
        n += 1
        target = path.with_name(f"{path.name}.imported.{n}")
    return target


def upgrade() -> None:
    if sa.inspect(op.get_bind()).has_table("alerts"):
        return
    table = op.create_table(
        "alerts",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("at", sa.String(length=40), nullable=False),
        sa.Column("kind", sa.String(length=100), nullable=False),
        sa.Column("severity", sa.String(length=10), nullable=False),
        sa.Column("message", sa.Text(), nullable=False),
        sa.Column("details_json", sa.Text(), nullable=False),
        sa.Column("release_id", sa.String(length=40), nullable=True),
        sa.Column("once_key", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("kind", "once_key", name="one_alert_per_kind_and_once_key"),
        sqlite_autoincrement=True,
    )
    op.create_index(op.f("ix_alerts_release_id"), "alerts", ["release_id"], unique=False)
    path = _legacy_file()
    if not path.is_file():
        return
    rows = _rows(_read(path))
    if rows:  # executemany: one INSERT per row, in the file's order, so the ids keep it
        op.get_bind().execute(table.insert(), rows)

    def rename() -> None:
        target = _free_name(path)
        try:
            os.replace(path, target)
        except OSError as e:
            raise RuntimeError(f"The {len(rows)} alerts of {path} are in the state store (migration 0006 committed), "
                               f"but renaming the file to {target} failed ({e}). Rename it by hand; nothing reads "
                               "it any more.") from e

    _after_commit(rename)


def downgrade() -> None:
    conn = op.get_bind()
    rows = conn.execute(sa.text("SELECT at, kind, severity, message, details_json FROM alerts ORDER BY id")).all()
    if rows:
        from release.core.io import atomic_write_text

        path = _legacy_file()
        if path.exists():
            raise ValueError(f"Cannot move the alerts back to {path} (migration 0006 down): that file exists. Nothing "
                             "was changed. Move it aside, then run the downgrade again.")
        staged = path.with_name(path.name + ".downgrade")
        atomic_write_text("".join(json.dumps({"at": r.at, "kind": r.kind, "severity": r.severity, "message": r.message,
                                              "details": json.loads(r.details_json)}, sort_keys=True) + "\n"
                                  for r in rows), staged)
        _after_commit(lambda: os.replace(staged, path))
    op.drop_index(op.f("ix_alerts_release_id"), table_name="alerts")
    op.drop_table("alerts")
