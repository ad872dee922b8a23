"""The store as one tidy pandas frame (the records' columns), and its CSV / Parquet exports.

By default the frame is what the study currently asks for: the variants, measurements and
workloads (seq_len x batch, any dtype) of the last `run` (its plan), each answered by the newest
unit per device and dtype, so results for an old base config or an older library version do not
mix in, while CPU and GPU results (say, imported from a GPU machine, in bfloat16) stand side by side. `everything=True` gives every stored record.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING

from .csvfile import write_atomic
from .environment import ALL_WORKLOADS, WorkloadKey
from .records import Provenance, Record, columns, to_row
from .store import Store, StoredUnit, open_store

if TYPE_CHECKING:  # pandas (0.5 s to import) only where a frame is made
    import pandas as pd

KEY_COLUMNS = ["variant_key", "env_id"]  # beyond the records' columns: what the store keys on


@cache  # a store holds few workload texts, read for every record
def _pair(workload: str) -> tuple[int, int] | str:
    """A stored workload's seq_len x batch (WorkloadKey.pair), or ALL_WORKLOADS as it is."""
    return workload if workload == ALL_WORKLOADS else WorkloadKey.parse(workload).pair


def _dtypes(u: StoredUnit) -> frozenset[str]:
    return frozenset(WorkloadKey.parse(w).dtype for w in u.workloads if w != ALL_WORKLOADS)


def _newest(units: list[StoredUnit]) -> list[StoredUnit]:
    """One unit per device and dtype: the most recently measured."""
    best: dict[tuple[str, frozenset[str]], StoredUnit] = {}
    for u in units:
        key = (u.device_name, _dtypes(u))
        if key not in best or (u.provenance.get("date", ""), u.unit_id) > (
            best[key].provenance.get("date", ""),
            best[key].unit_id,
        ):
            best[key] = u
    return list(best.values())


def _current(store: Store) -> tuple[list[StoredUnit], dict[tuple[str, str], set] | None]:
    units = store.units()
    plan = store.plan()
    if not plan:  # never run here (imports only): every answered item counts
        items = {(u.variant_key, u.measurement, _pair(w)) for u in units for w in u.workloads}
    else:
        items = {(vkey, name, _pair(w)) for vkey, _, name, w in plan}
    by_key: dict[tuple[str, str], list[StoredUnit]] = {}
    for u in units:
        by_key.setdefault((u.variant_key, u.measurement), []).append(u)
    kept: dict[int, StoredUnit] = {}
    for vkey, name, pair in items:
        answering = [
            u
            for u in by_key.get((vkey, name), [])
            if ALL_WORKLOADS in u.workloads or pair in {_pair(w) for w in u.workloads}
        ]
        kept.update((u.unit_id, u) for u in _newest(answering))
    pairs = None
    if plan:
        pairs = {}
        for vkey, _, name, w in plan:
            pairs.setdefault((vkey, name), set()).add(_pair(w))
    order = {(vkey, name): i for i, (vkey, _, name, _) in reversed(list(enumerate(plan)))}
    return sorted(
        kept.values(), key=lambda u: (order.get((u.variant_key, u.measurement), len(order)), u.unit_id)
    ), pairs


def _records_of(
    store: Store, units: list[StoredUnit], pairs: dict[tuple[str, str], set] | None
) -> list[tuple[Record, StoredUnit]]:
    info = {u.unit_id: u for u in units}
    rank = {u.unit_id: i for i, u in enumerate(units)}
    unit_pairs = {u.unit_id: {_pair(w) for w in u.workloads} for u in units}
    out = []
    for unit_id, record in sorted(store.records(list(info)), key=lambda x: rank[x[0]]):
        u = info[unit_id]
        workload = (record.seq_len, record.batch)
        if pairs is not None and record.seq_len is not None and record.batch is not None:
            # a workload the unit was stored for that the study no longer asks for; records at other
            # lengths (e.g. CPU speed runs at a capped length, with `seq_len_requested`) stay
            if workload in unit_pairs[unit_id] and workload not in pairs.get(
                (u.variant_key, u.measurement), set()
            ):
                continue
        out.append((record, u))
    return out


def stored_records(study_folder: Path, everything: bool = False) -> list[tuple[Record, StoredUnit]]:
    """The study's records from `<study_folder>/results.sqlite`, each with the unit that stored it."""
    with open_store(study_folder, create=False) as store:
        if everything:
            return _records_of(store, store.units(), None)
        return _records_of(store, *_current(store))


def provenance_of(unit: StoredUnit) -> Provenance:
    return Provenance(**{k: unit.provenance.get(k, "unknown") for k in Provenance.__dataclass_fields__})


def frame_of(pairs: list[tuple[Record, StoredUnit]]) -> pd.DataFrame:
    """One row per record, in the records' columns (labels as JSON text), with the store's keys."""
    rows, swept_keys, prov = [], {}, {}
    for record, u in pairs:
        swept_keys.update(dict.fromkeys(record.swept))
        if u.unit_id not in prov:
            prov[u.unit_id] = provenance_of(u).as_dict() | {"variant_key": u.variant_key, "env_id": u.env_id}
        rows.append(to_row(record, prov[u.unit_id]))
    import pandas as pd

    return pd.DataFrame(rows, columns=[*columns(list(swept_keys)), *KEY_COLUMNS])


def results_frame(study_folder: Path, everything: bool = False) -> pd.DataFrame:
    """The study's results from `<study_folder>/results.sqlite`, one row per record (export's view)."""
    return frame_of(stored_records(study_folder, everything))


def export(
    study_folder: Path, fmt: str = "csv", output: Path | None = None, everything: bool = False
) -> Path:
    frame = results_frame(study_folder, everything)
    return write_atomic(frame, output or study_folder / f"results.{fmt}", fmt)
