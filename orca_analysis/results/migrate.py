"""Store schema 1 -> 2, when a store made by the previous version is opened.

Schema 1 records carried a `category` mini-format and an `error` text, and a failed probe was an
`error` status. Each measurement that can, converts its own records (its `migrate_v1`: categories
to labels, errors to notes, failed probes to fail values); a measurement that cannot (its old
records lack what the new ones hold, e.g. every timing sample) has its results measured anew by
the next `run`. The old file is kept beside the new one as `results.v1.sqlite`, and one line says
what was kept and what will be measured anew.
"""

from __future__ import annotations

import json
import os
import sqlite3
import sys
from collections import Counter
from pathlib import Path
from typing import Any

from .metrics import check_record, lookup
from .records import Record

V1_FIELDS = ("study", "variant_id", "measurement", "metric", "method", "value", "unit", "seq_len", "batch",
             "dtype", "device", "status", "error", "category")  # fmt: skip


def parse_category(category: str) -> dict[str, str]:
    """Schema 1's `key=value,key=value` categories, as a mapping."""
    return dict(part.split("=", 1) for part in (category or "").split(",") if "=" in part)


def convert(measurement: Any, unit_records: list[dict[str, Any]]) -> list[Record]:
    """One stored unit's schema-1 records -> its schema-2 records (a failed call stays one error record)."""
    if not unit_records:
        return []
    old = unit_records[0]
    shared = {
        k: old[k] for k in ("study", "variant_id", "measurement", "seq_len", "batch", "dtype", "device")
    }
    if len(unit_records) == 1 and not old["metric"]:  # the call could not run at all: one error record
        return [Record(**shared, metric="", method="", value=None, unit="", status=old["status"],
                       note=old["error"] or "", swept=old["swept"])]  # fmt: skip
    out = []
    for new in measurement.migrate_v1(unit_records):
        fields = {**shared, "status": "ok", "note": "", "scale": "analytic", "labels": {}, **new}
        check_record(old["measurement"], fields["metric"], fields["method"], fields["labels"])
        out.append(Record(**fields, unit=lookup(fields["metric"]).unit, swept=old["swept"]))
    return out


def _rows(db: sqlite3.Connection, table: str) -> list[tuple]:
    return db.execute(f"SELECT * FROM {table}").fetchall()


def migrate_v1(path: Path) -> None:
    from ..measurements import MEASUREMENTS
    from .store import RECORD_FIELDS, _record_row, create_schema

    src = sqlite3.connect(path, isolation_level=None)
    src.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    tmp = path.with_name(f".{path.name}.v2.tmp")
    tmp.unlink(missing_ok=True)
    dst = sqlite3.connect(tmp, isolation_level=None)
    kept, dropped = Counter(), Counter()
    dst.execute("BEGIN")
    create_schema(dst)
    for table in ("environments", "plan"):
        rows = _rows(src, table)
        if rows:
            dst.executemany(f"INSERT INTO {table} VALUES ({', '.join('?' * len(rows[0]))})", rows)
    records: dict[int, list[dict[str, Any]]] = {}
    cols = ", ".join(V1_FIELDS)
    for row in src.execute(f"SELECT unit_id, {cols}, swept FROM records ORDER BY unit_id, seq"):
        old = dict(zip(V1_FIELDS, row[1:-1], strict=True))
        old["swept"] = json.loads(row[-1])
        records.setdefault(row[0], []).append(old)
    unit_cols = [r[1] for r in src.execute("PRAGMA table_info(units)")]
    for unit in _rows(src, "units"):
        u = dict(zip(unit_cols, unit, strict=True))
        m = MEASUREMENTS.get(u["measurement"])
        try:
            if m is None or m.migrate_v1 is None:
                raise ValueError("not migrated")
            new = convert(m, records.get(u["unit_id"], []))
        except (ValueError, KeyError, TypeError):  # measured anew: the old file keeps the old records
            dropped[u["measurement"]] += 1
            continue
        kept[u["measurement"]] += 1
        dst.execute(
            f"INSERT INTO units ({', '.join(unit_cols)}) VALUES ({', '.join('?' * len(unit_cols))})", unit
        )
        coverage = src.execute("SELECT * FROM coverage WHERE unit_id=?", (u["unit_id"],)).fetchall()
        dst.executemany("INSERT INTO coverage VALUES (?, ?, ?, ?, ?)", coverage)
        dst.executemany(
            f"INSERT INTO records (unit_id, seq, {', '.join(RECORD_FIELDS)}, swept) "
            f"VALUES ({', '.join('?' * (len(RECORD_FIELDS) + 3))})",
            [(u["unit_id"], i, *_record_row(r)) for i, r in enumerate(new)],
        )
    dst.execute("COMMIT")
    dst.close()
    src.close()
    old_path = path.with_name(f"{path.stem}.v1{path.suffix}")
    os.replace(path, old_path)
    os.replace(tmp, path)
    kept_text = ", ".join(sorted(kept)) or "nothing"
    again = f"; measured anew by the next run: {', '.join(sorted(dropped))}" if dropped else ""
    print(
        f"orca-analysis: {path}: results store of schema 1 migrated to schema 2 (kept: {kept_text}{again}); "
        f"the old store is kept as {old_path.name}",
        file=sys.stderr,
    )
