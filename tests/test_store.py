"""The results store on a real SQLite file: round trip, replacement, bad files, the report's frame."""

import sqlite3

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
