"""The results store on a real SQLite file: round trip, replacement, bad files, the report's frame."""

import json
import sqlite3
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from orca_analysis.errors import OrcaError
from orca_analysis.instruments.corpus import selected_corpus_label
from orca_analysis.measurements import MEASUREMENTS
from orca_analysis.results import Environment, Provenance, Record, export, open_store, results_frame
from orca_analysis.results.environment import ALL_WORKLOADS, WorkloadKey, variant_key, workload_key
from orca_analysis.results.importer import import_results
from orca_analysis.results.records import columns, to_row
from orca_analysis.results.store import Unit
from orca_analysis.runner import measurement_key
from orca_analysis.study import load_study

W32, W64 = workload_key(32, 1, "float32"), workload_key(64, 1, "float32")


def prov(
    device: str = "x86_64 CPU x2 threads", torch: str = "2.13.0", date: str = "2026-02-01"
) -> Provenance:
    return Provenance("0.1.0", torch, "2.31.10", "3.11.7", device, f"{date}T00:00:00+00:00", "abc1234")


def unit(vkey: str, workloads: tuple[str, ...], p: Provenance | None = None, status: str = "ok") -> Unit:
    return Unit(
        vkey, "base", "m", workloads, status, "" if status == "ok" else "boom", 0.5, p or prov(), "test"
    )


def rec(value, seq_len: int | None = 32, **kw) -> Record:
    return Record("s", "base", "m", "total", "counter", value, "FLOP", seq_len, 1 if seq_len else None, **kw)


def test_round_trip_keeps_types_and_the_file_is_wal(tmp_path):
    with open_store(tmp_path) as store:
        swept = {"dim": np.int64(64), "deepnorm": True}
        records = [rec(np.int64(181120), swept=swept), rec(0.25, dtype="float32"), rec(None, status="error")]
        unit_id = store.commit(unit("v1", (W32,)), records)
        back = [r for _, r in store.records([unit_id])]
        assert store.integrity() == "ok"
        assert store.db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert [r.value for r in back] == [181120, 0.25, None]
    assert type(back[0].value) is int  # an integer count stays exact, not 181120.0
    assert back[0].swept == {"dim": 64, "deepnorm": True} and back[1].dtype == "float32"
    assert back[2].status == "error" and back[2].note == "" and back[2].labels == {}


def test_a_unit_replaces_only_what_it_answers_again(tmp_path):
    cpu, gpu = prov(), prov("NVIDIA H200")
    env_cpu, env_gpu = Environment.of(cpu).env_id, Environment.of(gpu).env_id
    assert env_cpu != env_gpu and env_cpu == Environment.of(prov(date="2030-01-01")).env_id  # date is not env
    with open_store(tmp_path) as store:
        first = store.commit(unit("v1", (W32, W64), cpu), [rec(1), rec(2, seq_len=64)])
        other = store.commit(unit("v2", (W32,), cpu), [rec(5)])
        again = store.commit(unit("v1", (W32,), cpu), [rec(3)])  # overlaps `first`: replaces all of it
        on_gpu = store.commit(unit("v1", (W32,), gpu), [rec(4)])  # another environment: kept beside
        assert store.covered({env_cpu, env_gpu}) == {
            ("v1", "m", env_cpu): {W32},  # W64 went with `first`: measured again next run
            ("v2", "m", env_cpu): {W32},
            ("v1", "m", env_gpu): {W32},
        }
        assert [u.unit_id for u in store.units()] == [other, again, on_gpu] and first not in (other, again)
        whole = store.commit(unit("v1", (ALL_WORKLOADS,), cpu), [rec(6, seq_len=None)])
        assert store.covered({env_cpu})[("v1", "m", env_cpu)] == {ALL_WORKLOADS}
        assert [u.unit_id for u in store.units()] == [other, on_gpu, whole]


def test_failed_units_are_stored_and_retried_only_when_asked(tmp_path):
    env = Environment.of(prov()).env_id
    with open_store(tmp_path) as store:
        store.commit(unit("v1", (W32,), status="error"), [rec(None, status="error", note="boom")])
        assert store.covered({env}) == {("v1", "m", env): {W32}}
        assert store.covered({env}, ok_only=True) == {}


def test_bad_store_files_are_one_line_errors(tmp_path):
    with pytest.raises(OrcaError, match="run `orca-analysis run` first"):
        open_store(tmp_path / "nothing", create=False)
    garbage = tmp_path / "g"
    garbage.mkdir()
    (garbage / "results.sqlite").write_bytes(b"this is not a database, just text " * 200)
    with pytest.raises(OrcaError, match="not a readable results store") as err:
        open_store(garbage)
    assert len(err.value.problems) == 1 and "\n" not in err.value.problems[0]
    foreign = tmp_path / "f"
    foreign.mkdir()
    sqlite3.connect(foreign / "results.sqlite").execute("CREATE TABLE t (x)").connection.commit()
    with pytest.raises(OrcaError, match="not an orca-analysis results store"):
        open_store(foreign)
    empty = tmp_path / "e"
    empty.mkdir()
    (empty / "results.sqlite").write_bytes(b"")  # killed before its schema was committed
    with open_store(empty) as store:
        assert store.integrity() == "ok" and store.units() == []


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


def test_budget_skipped_units_answer_nothing(tmp_path):
    env = Environment.of(prov()).env_id
    with open_store(tmp_path) as store:
        store.commit(unit("v1", (W32,), status="skipped"), [rec(None, status="skipped", note="budget")])
        assert store.covered({env}) == {}  # the next run measures it


def test_frame_shows_the_current_study_newest_per_device(tmp_path):
    old_torch, new_torch = prov(torch="2.12.0", date="2026-01-01"), prov()
    with open_store(tmp_path) as store:
        store.set_plan([("vA", "base", "m", W32)])
        store.commit(unit("vA", (W32,), old_torch), [rec(1)])  # superseded by a newer torch on this CPU
        store.commit(unit("vA", (W32,), new_torch), [rec(2)])
        store.commit(unit("vA", (W32,), prov("NVIDIA H200")), [rec(3)])  # e.g. imported from a GPU machine
        store.commit(unit("vOld", (W32,), new_torch), [rec(9)])  # the base config before it changed
        store.commit(unit("vA", (W64,), new_torch), [rec(7, seq_len=64)])  # a workload no longer asked for
    frame = results_frame(tmp_path)
    assert sorted(frame["value"]) == [2, 3]
    assert set(frame["device_name"]) == {"x86_64 CPU x2 threads", "NVIDIA H200"}
    assert list(frame.columns) == [*columns([]), "variant_key", "env_id"]
    assert sorted(results_frame(tmp_path, everything=True)["value"]) == [1, 2, 3, 7, 9]


def test_frame_shows_gpu_results_in_another_dtype(tmp_path):
    # the study asks float32; a GPU machine measured the same seq_len x batch in bfloat16
    with open_store(tmp_path) as store:
        store.set_plan([("vA", "base", "m", W32)])
        store.commit(unit("vA", (W32,)), [rec(1, dtype="float32")])
        store.commit(
            unit("vA", (workload_key(32, 1, "bfloat16"),), prov("NVIDIA H200")), [rec(2, dtype="bfloat16")]
        )
    frame = results_frame(tmp_path)
    assert frame.set_index("dtype")["value"].to_dict() == {"float32": 1, "bfloat16": 2}


def test_export_csv_and_parquet_equal_the_frame(tmp_path):
    with open_store(tmp_path) as store:
        store.commit(
            unit("v1", (W32,)), [rec(181120, swept={"dim": 64}), rec(0.5, seq_len=None, swept={"dim": 64})]
        )
    frame = results_frame(tmp_path)  # no plan yet (imports only): everything stored
    assert len(frame) == 2
    csv = pd.read_csv(export(tmp_path))
    assert csv["value"].tolist() == [181120, 0.5] and csv["dim"].tolist() == [64, 64]
    pytest.importorskip("pyarrow", reason="parquet export needs the optional pyarrow")
    parquet = pd.read_parquet(export(tmp_path, "parquet"))
    assert parquet["value"].tolist() == [181120, 0.5] and parquet["torch"].tolist() == ["2.13.0"] * 2


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


def test_import_keys_training_results_by_the_corpus_they_name(tiny_study_path, tmp_path, monkeypatch):
    # a file of results measured elsewhere without a variant_key column: keys come from the study
    monkeypatch.delenv("ORCA_CORPUS", raising=False)
    gpu = prov("NVIDIA H200")
    stdlib = {"corpus": "python-stdlib-3.12.3", "sha256": "abcdef012345", "tokenizer": "bpe-256"}
    mine = {
        "corpus": "/data/my,text.txt",
        "sha256": "0123456789ab",
        "tokenizer": "byte",
    }  # a comma in the path
    rows = [
        ("base", "training", "corpus_tokens", 9, stdlib),
        ("base", "training", "val_loss_final", 2.5, {}),
        ("dim=32", "training", "corpus_tokens", 9, mine),
        ("dim=32", "training", "val_loss_final", 3.5, {}),
        ("depth=1", "training", "val_loss_final", None, {}),  # skipped: no corpus_tokens row
        ("base", "params", "params", 181120, {"component": "total"}),
    ]
    records = [
        Record("tiny", v, name, metric, "counter", value, "x", labels=c, status="ok" if value else "skipped")
        for v, name, metric, value, c in rows
    ]
    pd.DataFrame([to_row(r, gpu) for r in records], columns=columns([])).to_csv(
        tmp_path / "gpu.csv", index=False
    )
    import_results(tmp_path / "gpu.csv", tmp_path, str(tiny_study_path))
    configs = {v.variant_id: v.config for v in load_study(str(tiny_study_path)).variants()}
    with open_store(tmp_path / "tiny", create=False) as store:
        keys = {(u.measurement, u.variant_key) for u in store.units()}
    version = MEASUREMENTS[
        "training"
    ].spec.version  # keyed as `run` keys it, by the measurement's version too
    assert keys == {
        (
            "training",
            variant_key(configs["base"], "python-stdlib", version),
        ),  # any Python's stdlib: the default
        ("training", variant_key(configs["dim=32"], "/data/my,text.txt@0123456789ab", version)),
        ("training", variant_key(configs["depth=1"], "python-stdlib", version)),
        ("params", variant_key(configs["base"])),  # version 1, not trained on the corpus: the plain key
    }
    # the key a local run on the default corpus looks for: the GPU's training results answer it
    training = MEASUREMENTS["training"]
    assert ("training", measurement_key(configs["base"], training, selected_corpus_label())) in keys


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


def test_import_keys_a_remedys_training_results_as_run_does(tmp_path, monkeypatch):
    """A remedy's variant is measured less fully by `training` (its spec: by_role), so `run` stores its results
    under a key with the role; an imported file without a variant_key column lands under that same key
    (results_key for both). Before, the importer knew the sweep's variants only: a remedy's rows went unresolved."""
    monkeypatch.delenv("ORCA_CORPUS", raising=False)
    study = load_study("orca")
    remedy = study.remedy_variants()[0]
    assert remedy.role == "remedy"
    stdlib = {"corpus": "python-stdlib-3.12.3", "sha256": "abcdef012345", "tokenizer": "bpe-256"}
    records = [
        Record("orca", remedy.variant_id, "training", "corpus_tokens", "counter", 9, "tokens", labels=stdlib),
        Record("orca", remedy.variant_id, "training", "val_loss_final", "measured", 2.5, "nats/token"),
    ]
    pd.DataFrame([to_row(r, prov("NVIDIA H200")) for r in records], columns=columns([])).to_csv(
        tmp_path / "gpu.csv", index=False
    )
    import_results(tmp_path / "gpu.csv", tmp_path, "orca")
    with open_store(tmp_path / "orca", create=False) as store:
        keys = {u.variant_key for u in store.units()}
    training = MEASUREMENTS["training"]
    as_run = measurement_key(remedy.config, training, "python-stdlib", remedy.role)
    assert keys == {as_run} and as_run != measurement_key(remedy.config, training, "python-stdlib")


def test_a_workload_key_is_written_and_read_by_one_class():
    """WorkloadKey writes the store's workload text and parses it back; the frame's pair drops the dtype."""
    key = WorkloadKey(8192, 2, "bfloat16")
    assert str(key) == "seq_len=8192,batch=2,dtype=bfloat16" == workload_key(8192, 2, "bfloat16")
    assert WorkloadKey.parse(str(key)) == key and key.pair == (8192, 2)
