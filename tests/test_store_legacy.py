"""Stores and results files an older orca-analysis wrote: a store of another schema refused in one line, the
columns and labels an older store lacks added once (two processes at a time too), and the causes and probe
outcomes its notes' words said, read once (results/legacy.py); the helpers: test_store.py."""

import json
import sqlite3
from pathlib import Path

import pandas as pd
import pytest
from test_store import W32, prov, rec, unit

from orca_analysis.errors import OrcaError
from orca_analysis.results import Environment, Record, open_store
from orca_analysis.results.importer import import_results
from orca_analysis.results.records import columns, to_row


def test_a_record_field_added_later_becomes_a_column(tmp_path):
    open_store(tmp_path).close()
    db = sqlite3.connect(tmp_path / "results.sqlite")
    db.execute("ALTER TABLE records DROP COLUMN note")  # a store written before `note` existed
    db.commit()
    db.close()
    with open_store(tmp_path) as store:
        store.commit(unit("v1", (W32,)), [rec(1, note="noisy", labels={"component": "attention"})])
        back = [r for _, r in store.records([u.unit_id for u in store.units()])]
        assert [(r.note, r.labels) for r in back] == [("noisy", {"component": "attention"})]


def test_a_store_written_before_causes_has_them_read_once_from_its_notes(tmp_path):
    """Before `cause` was a field, the remedies and the attention-speed section searched notes for these
    words (results/legacy.py LEGACY_NOTES); opening such a store gives each old record the cause its
    words named, once, and nothing reads a note for it again."""
    flex = "NotImplementedError: FlexAttention does not support backward on CPU"
    old = [
        rec(None, status="error", note=flex),  # the memory walk's training step
        rec(None, status="skipped", note="needs a GPU: " + flex),  # training's final losses
        rec(
            None, status="skipped", note="... this memory and time need a GPU run (the profiler)"
        ),  # forecast
        rec(None, status="skipped", note="not testable at this scale: the change acts through ..."),
        rec(None, status="skipped", note="not eligible: the float mask"),  # attention_speed: refused
        rec(None, status="skipped", note="not applicable on cpu: CUDA-only kernel"),
        rec(None, status="error", note="Not testable at this scale"),  # case and status as the old rules read
        rec(None, status="error", note="not eligible: an error record is no skip"),
        rec(2.0, note="noisy: needs a GPU to time well"),  # an ok record has no cause
    ]
    with open_store(tmp_path) as store:
        store.commit(unit("v1", (W32,)), old)
    db = sqlite3.connect(tmp_path / "results.sqlite")
    db.execute("ALTER TABLE records DROP COLUMN cause")  # as an older orca-analysis wrote it
    db.commit()
    db.close()
    with open_store(tmp_path) as store:
        back = [r.cause for _, r in store.records([u.unit_id for u in store.units()])]
    assert back == ["needs a GPU", "needs a GPU", "needs a GPU", "not testable at this scale", "refused"] + [
        "not applicable",
        "",
        "",
        "",
    ]
    with open_store(tmp_path) as store:  # the column is there now: read as stored, not again from the notes
        store.db.execute("UPDATE records SET cause = '' WHERE note LIKE 'not eligible%'")
    with open_store(tmp_path) as store:
        assert [r.cause for _, r in store.records([u.unit_id for u in store.units()])][4] == ""


def test_two_processes_opening_an_old_store_add_its_columns_once(tmp_path, monkeypatch):
    """A second `report` that saw the column missing, while the first added it, asks again in its
    transaction instead of adding it twice (sqlite: duplicate column name)."""
    from orca_analysis.results.store import Store

    open_store(tmp_path).close()
    db = sqlite3.connect(tmp_path / "results.sqlite")
    db.execute("ALTER TABLE records DROP COLUMN cause")
    db.commit()
    real, asked = Store._missing, []

    def first_sees_it_missing(self):
        asked.append(1)
        if len(asked) == 1:  # outside the transaction: missing; then the other process adds it
            db.execute("ALTER TABLE records ADD COLUMN cause TEXT")
            db.commit()
            return ["cause"]
        return real(self)

    monkeypatch.setattr(Store, "_missing", first_sees_it_missing)
    with open_store(tmp_path) as store:
        assert store.integrity() == "ok" and len(asked) == 2
    db.close()


def test_a_store_written_before_probe_outcomes_has_them_read_once_from_its_notes(tmp_path):
    """Probes v1 stored pass/fail records without the `outcome` label, a crash said only by an exception's
    text in the note; opening such a store labels each once, as probes v2 would have."""

    def probe(value, note="", labels=None):
        labels = labels or {"case": "as_built"}
        return Record("s", "base", "probes", "kv_cache", "measured", value, "pass", note=note, labels=labels)

    v1 = [probe(1.0), probe(0.0, "RuntimeError: shape mismatch"), probe(0.0, "max |diff| 3.1 > 1e-4")]
    v2 = [probe(0.0, "RuntimeError: x", {"case": "as_built", "outcome": "fail"})]  # labelled: left as is
    with open_store(tmp_path) as store:
        store.commit(unit("v1", (W32,)), [*v1, *v2])
        store.db.execute("DELETE FROM meta WHERE key = 'probe_outcomes'")  # as an older orca-analysis left it
    with open_store(tmp_path) as store:
        back = [r.labels for _, r in store.records([u.unit_id for u in store.units()])]
    assert [b["outcome"] for b in back] == ["pass", "crash", "fail", "fail"]
    assert list(back[0]) == ["case", "outcome"]  # in the declared order


def test_import_reads_a_cause_and_takes_a_file_from_before_causes(tmp_path):
    """A file with the column is read as it says; one exported before it gets each cause from its notes'
    words (and a v1 probe its outcome), as an old store does when opened (results/legacy.py)."""
    rows = [
        rec(1.0),
        rec(None, status="skipped", note="needs a GPU: ...", cause="needs a GPU"),
        rec(None, status="skipped", note="needs a GPU: but the cause says otherwise"),
        Record("s", "base", "probes", "kv_cache", "measured", 0.0, "pass", note="RuntimeError: x", labels={}),
    ]
    frame = pd.DataFrame([to_row(r, prov("NVIDIA H200")) for r in rows], columns=columns([]))
    frame.to_csv(tmp_path / "now.csv", index=False)
    frame.drop(columns="cause").to_csv(tmp_path / "before.csv", index=False)  # exported before the column
    frame.assign(cause=["", "out of paper", "", ""]).to_csv(tmp_path / "bad.csv", index=False)
    for name, want in (("now", ["", "needs a GPU", ""]), ("before", ["", "needs a GPU", "needs a GPU"])):
        out = tmp_path / name
        import_results(tmp_path / f"{name}.csv", out)
        with open_store(out / "s", create=False) as store:
            back = [r for _, r in store.records([u.unit_id for u in store.units()])]
        assert [r.cause for r in back if r.metric == "total"] == want
        assert [r.labels for r in back if r.metric == "kv_cache"] == [{"outcome": "crash"}]
    with pytest.raises(OrcaError, match=r"bad.csv line 3: cause 'out of paper' is not one of needs a GPU, "):
        import_results(tmp_path / "bad.csv", tmp_path / "bad")


V1_RECORDS = (
    "CREATE TABLE records (unit_id INTEGER NOT NULL, seq INTEGER NOT NULL, study TEXT, variant_id TEXT, "
    "measurement TEXT, metric TEXT, method TEXT, value, unit TEXT, seq_len INTEGER, batch INTEGER, dtype TEXT, "
    "device TEXT, status TEXT, error TEXT, category TEXT, swept TEXT NOT NULL, PRIMARY KEY (unit_id, seq))"
)


def _v1_store(folder: Path) -> None:
    """A store as the previous version wrote it: schema 1, categories and error texts."""
    from orca_analysis.results.store import _SCHEMA

    folder.mkdir(parents=True)
    db = sqlite3.connect(folder / "results.sqlite")
    db.executescript(_SCHEMA + ";" + V1_RECORDS)
    db.execute("INSERT INTO meta VALUES ('schema_version', '1')")
    env = Environment.of(prov())
    db.execute("INSERT INTO environments VALUES (?, ?, ?, ?, ?, ?)", (env.env_id, *env.__dict__.values()))
    units = [(1, "kp", "params", '["*"]'), (2, "kt", "training", '["*"]'), (3, "kq", "probes", '["*"]')]
    for uid, key, name, _ in units:
        db.execute(
            "INSERT INTO units VALUES (?, ?, 'base', ?, ?, 'ok', '', 1.0, 'now', ?, 'test')",
            (uid, key, name, env.env_id, json.dumps(prov().as_dict())),
        )
        db.execute("INSERT INTO coverage VALUES (?, ?, '*', ?, ?)", (key, name, env.env_id, uid))
    rows = [
        (1, "params", "total", "counter", 181120, "params", "ok", "", ""),
        (
            2,
            "training",
            "val_loss_final",
            "measured",
            2.5,
            "nats/token",
            "ok",
            "",
            "seed=0,tokens=64,flops=1e+06",
        ),
        (
            2,
            "training",
            "val_loss_final",
            "measured",
            2.7,
            "nats/token",
            "ok",
            "",
            "seed=1,tokens=64,flops=1e+06",
        ),
        (2, "training", "val_loss_final", "aggregate", 2.6, "nats/token", "ok", "", "seed=mean"),
        (3, "probes", "kv_cache", "measured", None, "logit", "error", "RuntimeError: boom", "case=as_built"),
    ]
    for seq, (uid, name, metric, method, value, unit_, status, error, category) in enumerate(rows):
        db.execute(
            "INSERT INTO records VALUES (?, ?, 'tiny', 'base', ?, ?, ?, ?, ?, NULL, NULL, 'float32', "
            "'cpu', ?, ?, ?, ?)",
            (uid, seq, name, metric, method, value, unit_, status, error, category, json.dumps({"dim": 64})),
        )
    db.commit()
    db.close()


def test_a_store_of_the_old_schema_is_refused_in_one_line_and_force_moves_it_aside(tmp_path, tiny_study_path):
    """An older orca-analysis's store (schema 1): `run` and `report` refuse it in one line, exit 2, naming
    --force; `run --force` moves it aside (results.schema-1.sqlite, nothing deleted) and measures anew."""
    from orca_analysis.cli import main

    folder = tmp_path / "tiny"
    _v1_store(folder)
    with pytest.raises(OrcaError, match=r"schema 1 .*re-run with --force"):
        open_store(folder)
    assert main(["report", str(tiny_study_path), "--out", str(tmp_path)]) == 2
    args = ["run", str(tiny_study_path), "--out", str(tmp_path)]  # tiny.yaml measures params alone
    assert main(args) == 2
    assert main([*args, "--force"]) == 0
    assert (folder / "results.schema-1.sqlite").is_file()
    with open_store(folder) as store:
        assert {u.measurement for u in store.units()} == {"params"}
