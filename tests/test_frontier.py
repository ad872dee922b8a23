"""The cost frontier: which variants no other dominates, and the section that shows them."""

from orca_analysis.kit.format import cell
from orca_analysis.report.frontier import frontier_section
from orca_analysis.results.derive import pareto_front
from orca_analysis.results.query import Results
from orca_analysis.results.records import Record
from orca_analysis.study import load_study


def test_pareto_front_by_hand():
    # (size, cost): (20, 5) is dominated by (30, 3): more size for less cost; (10, 1) is the cheapest;
    # (40, 4) is the largest. Ties: (40, 4) twice are both kept (neither is better on one coordinate).
    points = [(10, 1), (20, 5), (30, 3), (40, 4)]
    assert pareto_front(points) == [True, False, True, True]
    assert pareto_front([(40, 4), (40, 4)]) == [True, True]
    # loss against cost, lower on both: (2, 3.0) is beaten by (1, 2.5)
    assert pareto_front([(1, 2.5), (2, 3.0), (4, 2.0)], ("lower", "lower")) == [True, False, True]


def _records(study, values):
    out = []
    for vid, (params, flops) in values.items():
        out.append(
            Record(
                study.name,
                vid,
                "params",
                "params",
                "counter",
                params,
                "params",
                labels={"component": "total"},
            )
        )
        out.append(
            Record(
                study.name,
                vid,
                "flops",
                "train_step_causal",
                "counter",
                flops,
                "FLOP",
                64,
                1,
                "float32",
                device="none",
                labels={"component": "total"},
            )
        )
    return out


def test_frontier_section_marks_the_dominated_variant():
    study = load_study("tests/fixtures/tiny.yaml")  # variants: base, dim=32, depth=1, depth=3
    ids = [v.variant_id for v in study.variants()]
    assert ids == ["base", "dim=32", "depth=1", "depth=3"]
    values = dict(zip(ids, [(30, 3.0), (10, 1.0), (20, 5.0), (40, 4.0)], strict=True))
    section = frontier_section(Results.from_records(_records(study, values)), study)
    table = section.tables[0]
    assert table.title == "Cost against size at 64 tokens"  # the study's longest length
    on = {row[0]: cell(row[-1]) for row in table.rows}
    assert on == {
        "base": "training-step FLOPs",
        "dim=32": "training-step FLOPs",
        "depth=1": "-",
        "depth=3": "training-step FLOPs",
    }
    assert [f.name for f in section.figures] == ["cost_frontier"] and "<svg" in section.figures[0].svg
    # the memory cost is not measured here: its panel and column are left out, not shown empty
    assert table.columns == ["variant", "parameters", "training-step FLOPs (causal)", "on the frontier of"]


def test_no_frontier_without_a_sweep():
    study = load_study("tests/fixtures/tiny.yaml")
    assert frontier_section(Results.from_records([]), study) is None


def test_no_frontier_for_fewer_than_three_measured_variants():
    study = load_study("tests/fixtures/tiny.yaml")
    two = _records(study, {"base": (30, 3.0), "dim=32": (10, 1.0)})
    assert frontier_section(Results.from_records(two), study) is None
    only_params = [r for r in _records(study, {"base": (1, 1.0)}) if r.metric == "params"]
    assert frontier_section(Results.from_records(only_params), study) is None
