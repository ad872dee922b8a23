"""The query over stored results (results/query.py): declared metrics in, values with samples out."""

import pytest

from orca_analysis import load_results
from orca_analysis.catalog.metrics import MetricError
from orca_analysis.results import Record, open_store
from orca_analysis.results.query import Results, prefer_device
from orca_analysis.results.store import Unit
from tests.test_store import W32, prov


def _loss(seed, value, device="cpu", vid="base", dim=64):
    labels = {"seed": seed, "tokens": 64, "flops": 1e6}
    return Record(
        "tiny",
        vid,
        "training",
        "val_loss_final",
        "measured",
        value,
        "nats/token",
        device=device,
        scale="proxy",
        labels=labels,
        swept={"dim": dim},
    )


def _time(repeat, seconds):
    return Record(
        "tiny",
        "base",
        "speed",
        "train_step_time",
        "measured",
        seconds,
        "s",
        32,
        1,
        labels={"repeat": repeat},
        swept={"dim": 64},
    )


def test_seeds_become_one_value_with_its_samples_and_timings_their_median():
    results = Results.from_records(
        [_loss(1, 2.7), _loss(0, 2.5), *(_time(i, t) for i, t in enumerate([3, 1, 2, 9]))]
    )
    loss = results.one("val_loss_final")
    assert (loss.value, loss.samples, loss.sample_ids) == (
        pytest.approx(2.6),
        (2.5, 2.7),
        (0, 1),
    )  # in seed order
    assert loss.spread == pytest.approx(0.2) and loss.n == 2 and loss.unit == "nats/token"
    step = results.one("train_step_time", seq_len=32)
    assert step.value == 2.5 and step.n == 4  # median of 1, 2, 3, 9 = (2 + 3) / 2


def test_unknown_names_are_errors_and_many_matches_for_one_is_an_error():
    results = Results.from_records([_loss(0, 2.5), _loss(0, 3.0, vid="dim=32", dim=32)])
    with pytest.raises(MetricError, match="did you mean 'val_loss_final'"):
        results.values("val_loss_finl")
    with pytest.raises(MetricError, match="has no label 'sed'"):
        results.values("val_loss_final", sed=0)
    with pytest.raises(MetricError, match="2 values match"):
        results.one("val_loss_final")
    assert results.number("val_loss_final", variant="dim=32") == 3.0
    assert results.values("val_loss_final", variant={"base", "dim=32"}, seed=0)  # a set: any of them


def test_one_device_is_kept_the_one_covering_the_axis():
    values = Results.from_records(
        [_loss(0, 1.0, "cpu", "base"), _loss(0, 1.1, "cpu", "dim=32", 32), _loss(0, 2.0, "cuda", "base")]
    ).values("val_loss_final")
    assert {v.device for v in prefer_device(values, "dim")} == {"cpu"}  # the CPU covers two points of dim
    assert {v.device for v in prefer_device(values[::2])} == {"cuda"}  # a tie: the GPU


def test_a_notebook_loads_a_study_as_a_tidy_frame_in_one_call(tmp_path):
    with open_store(tmp_path / "tiny") as store:
        store.commit(
            Unit("k", "base", "training", (W32,), "ok", "", 1.0, prov(), "test"),
            [_loss(0, 2.5), _loss(1, 2.7)],
        )
    frame = load_results("tiny", tmp_path).frame()
    assert frame[["metric", "value", "unit", "scale", "label.seed"]].values.tolist() == [
        ["val_loss_final", 2.5, "nats/token", "proxy", 0],
        ["val_loss_final", 2.7, "nats/token", "proxy", 1],
    ]
    assert (
        frame["labels"].iloc[0] == {"seed": 0, "tokens": 64, "flops": 1e6}
        and frame["torch"].iloc[0] == "2.13.0"
    )
