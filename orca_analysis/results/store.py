"""The results store: `reports/<study>/results.sqlite`, an SQLite file in WAL mode.

A *unit* is one run of one measurement on one variant over some workloads; it is committed in one
transaction when it finishes (units, coverage and records together), so a crash or a kill loses
only what had not finished, and the file stays readable. `coverage` says which (variant config,
measurement, workload, environment) a unit answers: that is what `run` skips on the next run.
A unit that answers something already answered replaces the older unit (e.g. `run --force`).
A unit the GPU run's budget cut (`skipped`) answers nothing: the next run measures it.
A store of another schema (an older orca-analysis wrote it) is refused with one line; `run --force`
moves it aside (`results.schema-<n>.sqlite`, nothing deleted) and measures anew.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from ..catalog.declared.probes import PROBES
from ..errors import OrcaError
from .environment import ALL_WORKLOADS, Environment, plain
from .legacy import cause_from_note, with_probe_outcome
from .records import Provenance, Record, labels_text

REPORTS_DIR = Path("reports")
STORE_NAME = "results.sqlite"
SCHEMA_VERSION = "2"
RECORD_FIELDS = [f.name for f in fields(Record) if f.name != "swept"]
_INTEGER_FIELDS = {"seq_len", "batch"}

_SCHEMA = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE environments (env_id TEXT PRIMARY KEY, device_name TEXT NOT NULL, torch TEXT NOT NULL,
    x_transformers TEXT NOT NULL, python TEXT NOT NULL, orca_analysis TEXT NOT NULL);
CREATE TABLE units (unit_id INTEGER PRIMARY KEY, variant_key TEXT NOT NULL, variant_id TEXT NOT NULL,
    measurement TEXT NOT NULL, env_id TEXT NOT NULL REFERENCES environments, status TEXT NOT NULL,
    error TEXT NOT NULL, seconds REAL, finished TEXT NOT NULL, provenance TEXT NOT NULL,
    source TEXT NOT NULL);
CREATE TABLE coverage (variant_key TEXT NOT NULL, measurement TEXT NOT NULL, workload TEXT NOT NULL,
    env_id TEXT NOT NULL, unit_id INTEGER NOT NULL REFERENCES units,
    PRIMARY KEY (variant_key, measurement, env_id, workload));
CREATE INDEX coverage_unit ON coverage (unit_id);
CREATE TABLE plan (position INTEGER PRIMARY KEY, variant_key TEXT NOT NULL, variant_id TEXT NOT NULL,
    measurement TEXT NOT NULL, workload TEXT NOT NULL);
"""


PROBE_OUTCOMES = "probe_outcomes"  # meta key: the probe records stored before their outcome label have it
STUDY_SOURCE = "study_source"  # meta key: the study file (absolute) or builtin:<name> the last run measured


def study_dir(study_name: str, root: Path | None = None) -> Path:
    return (root or REPORTS_DIR) / study_name


def store_path(study_folder: Path) -> Path:
    return study_folder / STORE_NAME


@dataclass(frozen=True)
class Unit:
    variant_key: str
    variant_id: str
    measurement: str
    workloads: tuple[str, ...]  # workload keys, or (ALL_WORKLOADS,)
    status: str  # "ok"; "error" when the measurement failed (exception, worker died); "skipped" (budget)
    error: str
    seconds: float
    provenance: Provenance
    source: str  # "in-process", "worker pid 123", "ray 10.0.0.2", "import:file.csv"


@dataclass(frozen=True)
class StoredUnit:
    unit_id: int
    variant_key: str
    measurement: str
    env_id: str
    status: str
    finished: str
    provenance: dict[str, str]
    workloads: frozenset[str]
    device_name: str


class Store:
    def __init__(self, path: Path, create: bool = True, replace_old: bool = False):
        """`replace_old`: a store of another schema is moved aside and a new one made (`run --force`)."""
        if not create and not path.is_file():
            raise OrcaError(f"no results store at {path}: run `orca-analysis run` first")
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        if replace_old and path.is_file():
            _move_aside_if_old(path)
        self.db = sqlite3.connect(path, timeout=30, isolation_level=None)
        try:
            self._pragmas()
            if not self._tables():  # new, or killed before its schema was committed
                with self.transaction():
                    if self._tables():  # another run created it meanwhile
                        return
                    create_schema(self.db)
            else:
                self._check(self._tables())
        except sqlite3.DatabaseError as exc:
            self.db.close()
            raise OrcaError(
                f"{path}: not a readable results store ({exc}); move it aside to start anew"
            ) from None
        except OrcaError:
            self.db.close()
            raise

    def _pragmas(self) -> None:
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=FULL")  # a committed unit survives power loss too

    def _tables(self) -> set[str]:
        return {r[0] for r in self.db.execute("SELECT name FROM sqlite_master WHERE type='table'")}

    def _check(self, tables: set[str]) -> None:
        if "meta" not in tables or "records" not in tables:
            raise OrcaError(f"{self.path}: not an orca-analysis results store (move it aside to start anew)")
        row = self.db.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
        if not row or row[0] != SCHEMA_VERSION:
            raise OrcaError(
                f"{self.path}: a results store of schema {row and row[0]} (this orca-analysis writes "
                f"schema {SCHEMA_VERSION}): re-run with --force to measure anew (the old file is "
                "moved aside, not deleted)"
            )
        if self._missing() or self.meta(PROBE_OUTCOMES) is None:
            with self.transaction():  # asked again inside: another process may have done it meanwhile
                missing = self._missing()
                for name in missing:
                    self.db.execute(f"ALTER TABLE records ADD COLUMN {_column(name)}")
                if "cause" in missing:
                    _causes_of_old_records(self.db)
                if self.meta(PROBE_OUTCOMES) is None:
                    _outcomes_of_old_probes(self.db)
                    self.db.execute("INSERT INTO meta VALUES (?, 'labelled')", (PROBE_OUTCOMES,))

    def _missing(self) -> list[str]:
        """The Record fields the records table lacks (a store written before Record gained them)."""
        have = {r[1] for r in self.db.execute("PRAGMA table_info(records)")}
        return [f for f in RECORD_FIELDS if f not in have]

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        self.db.execute("BEGIN IMMEDIATE")
        try:
            yield self.db
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        self.db.execute("COMMIT")

    def close(self) -> None:
        self.db.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- the study that made it ------------------------------------------------------------------
    def set_meta(self, key: str, value: str) -> None:
        with self.transaction():
            self.db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, value))

    def meta(self, key: str) -> str | None:
        row = self.db.execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
        return row[0] if row else None

    # -- writing ------------------------------------------------------------------------------
    def set_plan(self, items: list[tuple[str, str, str, str]]) -> None:
        """The current study as (variant_key, variant_id, measurement, workload): what reports show."""
        with self.transaction():
            self.db.execute("DELETE FROM plan")
            self.db.executemany(
                "INSERT INTO plan VALUES (?, ?, ?, ?, ?)", [(i, *it) for i, it in enumerate(items)]
            )

    def commit(self, unit: Unit, records: list[Record]) -> int:
        """Store one finished unit with its records, replacing older units that answered the same."""
        env = Environment.of(unit.provenance)
        key = (unit.variant_key, unit.measurement, env.env_id)
        with self.transaction():
            self.db.execute(
                "INSERT OR IGNORE INTO environments VALUES (?, ?, ?, ?, ?, ?)",
                (env.env_id, *env.__dict__.values()),
            )
            self._drop(self._overlapping(key, unit.workloads))
            cur = self.db.execute(
                "INSERT INTO units (variant_key, variant_id, measurement, env_id, status, error, seconds, "
                "finished, provenance, source) VALUES (?, ?, ?, ?, ?, ?, ?, datetime('now'), ?, ?)",
                (
                    unit.variant_key,
                    unit.variant_id,
                    unit.measurement,
                    env.env_id,
                    unit.status,
                    unit.error,
                    unit.seconds,
                    json.dumps(unit.provenance.as_dict()),
                    unit.source,
                ),
            )
            unit_id = int(cur.lastrowid)
            self.db.executemany(
                "INSERT INTO coverage VALUES (?, ?, ?, ?, ?)",
                [(unit.variant_key, unit.measurement, w, env.env_id, unit_id) for w in unit.workloads],
            )
            self.db.executemany(
                f"INSERT INTO records (unit_id, seq, {', '.join(RECORD_FIELDS)}, swept) "
                f"VALUES ({', '.join('?' * (len(RECORD_FIELDS) + 3))})",
                [(unit_id, i, *_record_row(r)) for i, r in enumerate(records)],
            )
        return unit_id

    def _overlapping(self, key: tuple[str, str, str], workloads: tuple[str, ...]) -> list[int]:
        rows = self.db.execute(
            "SELECT DISTINCT unit_id, workload FROM coverage WHERE variant_key=? AND measurement=? AND env_id=?",
            key,
        ).fetchall()
        mine = set(workloads)
        return sorted({u for u, w in rows if ALL_WORKLOADS in mine or w == ALL_WORKLOADS or w in mine})

    def _drop(self, unit_ids: list[int]) -> None:
        for table in ("records", "coverage", "units"):
            self.db.executemany(f"DELETE FROM {table} WHERE unit_id=?", [(u,) for u in unit_ids])

    # -- reading ------------------------------------------------------------------------------
    def covered(self, env_ids: set[str], ok_only: bool = False) -> dict[tuple[str, str, str], set[str]]:
        """(variant_key, measurement, env_id) -> the workloads already answered there."""
        out: dict[tuple[str, str, str], set[str]] = {}
        rows = self.db.execute(
            "SELECT c.variant_key, c.measurement, c.env_id, c.workload, u.status FROM coverage c "
            "JOIN units u USING (unit_id)"
        )
        for vkey, name, env_id, workload, status in rows:
            if env_id in env_ids and status != "skipped" and (status == "ok" or not ok_only):
                out.setdefault((vkey, name, env_id), set()).add(workload)
        return out

    def plan(self) -> list[tuple[str, str, str, str]]:
        return self.db.execute(
            "SELECT variant_key, variant_id, measurement, workload FROM plan ORDER BY position"
        ).fetchall()

    def units(self) -> list[StoredUnit]:
        workloads: dict[int, set[str]] = {}
        for unit_id, workload in self.db.execute("SELECT unit_id, workload FROM coverage"):
            workloads.setdefault(unit_id, set()).add(workload)
        rows = self.db.execute(
            "SELECT u.unit_id, u.variant_key, u.measurement, u.env_id, u.status, u.finished, u.provenance, "
            "e.device_name FROM units u JOIN environments e USING (env_id) ORDER BY u.unit_id"
        )
        return [
            StoredUnit(
                uid, vkey, name, env, status, fin, json.loads(prov), frozenset(workloads.get(uid, ())), dev
            )
            for uid, vkey, name, env, status, fin, prov, dev in rows
        ]

    def records(self, unit_ids: list[int]) -> Iterator[tuple[int, Record]]:
        wanted = set(unit_ids)
        cols = ", ".join(RECORD_FIELDS)
        swept: dict[str, dict] = {}  # a unit's records share their swept values: parsed once, copied
        for row in self.db.execute(f"SELECT unit_id, {cols}, swept FROM records ORDER BY unit_id, seq"):
            if row[0] in wanted:
                values = dict(zip(RECORD_FIELDS, row[1:-1], strict=True))
                values = {
                    k: ("" if v is None and k not in _INTEGER_FIELDS | {"value"} else v)
                    for k, v in values.items()
                }
                values["labels"] = json.loads(values["labels"]) if values["labels"] else {}
                if row[-1] not in swept:
                    swept[row[-1]] = json.loads(row[-1])
                yield row[0], Record(**values, swept=dict(swept[row[-1]]))

    def integrity(self) -> str:
        return self.db.execute("PRAGMA integrity_check").fetchone()[0]


def _causes_of_old_records(db: sqlite3.Connection) -> None:
    """Records stored before `cause` was a field said it in their note's words only: each gets the cause its
    words name (results/legacy.py), once, as the column is added."""
    db.execute("UPDATE records SET cause = '' WHERE cause IS NULL")
    rows = db.execute("SELECT unit_id, seq, status, note FROM records WHERE status != 'ok'").fetchall()
    db.executemany(
        "UPDATE records SET cause = ? WHERE unit_id = ? AND seq = ?",
        [(str(c), u, q) for u, q, status, note in rows if (c := cause_from_note(status, note or ""))],
    )


def _outcomes_of_old_probes(db: sqlite3.Connection) -> None:
    """Probe records stored before their `outcome` label (probes v1) get it, once (results/legacy.py; a meta
    key says it is done)."""
    rows = db.execute(
        f"SELECT unit_id, seq, metric, status, value, note, labels FROM records WHERE status = 'ok' "
        f"AND metric IN ({', '.join('?' * len(PROBES))})",
        PROBES,
    ).fetchall()
    for unit_id, seq, metric, status, value, note, text in rows:
        labels = with_probe_outcome(metric, status, value, note or "", json.loads(text) if text else {})
        if labels is not None:
            db.execute(
                "UPDATE records SET labels = ? WHERE unit_id = ? AND seq = ?",
                (labels_text(labels), unit_id, seq),
            )


def create_schema(db: sqlite3.Connection) -> None:
    for statement in _SCHEMA.split(";"):
        if statement.strip():
            db.execute(statement)
    db.execute(
        f"CREATE TABLE records (unit_id INTEGER NOT NULL, seq INTEGER NOT NULL, "
        f"{', '.join(_column(f) for f in RECORD_FIELDS)}, swept TEXT NOT NULL, "
        "PRIMARY KEY (unit_id, seq))"
    )
    db.execute("INSERT INTO meta VALUES ('schema_version', ?)", (SCHEMA_VERSION,))
    db.execute("INSERT INTO meta VALUES (?, 'labelled')", (PROBE_OUTCOMES,))  # nothing old to label


def _column(name: str) -> str:
    if name == "value":
        return "value"  # no declared type: ints stay ints, floats stay floats
    return f"{name} {'INTEGER' if name in _INTEGER_FIELDS else 'TEXT'}"


def _record_row(record: Record) -> tuple[Any, ...]:
    values = [
        labels_text({k: plain(v) for k, v in record.labels.items()})
        if f == "labels"
        else plain(getattr(record, f))
        for f in RECORD_FIELDS
    ]
    swept = json.dumps({k: plain(v) for k, v in record.swept.items()}, default=str)
    return (*values, swept)


def open_store(study_folder: Path, create: bool = True, replace_old: bool = False) -> Store:
    return Store(store_path(study_folder), create=create, replace_old=replace_old)


def _move_aside_if_old(path: Path) -> None:
    """A store of another schema becomes results.schema-<n>.sqlite beside it (with its WAL files)."""
    db = sqlite3.connect(path)
    try:
        row = db.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
    except sqlite3.DatabaseError:
        return  # not a store, or no meta: the store's own checks say so
    finally:
        db.close()
    if row and row[0] != SCHEMA_VERSION:
        for suffix in ("", "-wal", "-shm"):
            old = path.with_name(path.name + suffix)
            if old.exists():
                old.rename(path.with_name(f"{path.stem}.schema-{row[0]}{path.suffix}{suffix}"))
