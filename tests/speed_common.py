"""What the kernels, attention_speed and speed tests share: the tiny study and record lookups."""

import dataclasses
from pathlib import Path

from orca_analysis.measurements import MEASUREMENTS
from orca_analysis.study import load_study
from orca_analysis.study.schema import Workloads

TINY = Path(__file__).parent / "fixtures" / "tiny.yaml"


def _study(sets=(), seq_lens=(32,)):
    study = load_study(str(TINY), list(sets))
    return dataclasses.replace(study, workloads=Workloads(list(seq_lens), [1], "float32"))


def _run(name, study, variant=0):
    return MEASUREMENTS[name].run(study.variants()[variant], study)


def _pick(records, metric, status="ok", **labels):
    return [
        r
        for r in records
        if r.metric == metric
        and (status is None or r.status == status)
        and all(r.labels.get(k) == v for k, v in labels.items())
    ]
