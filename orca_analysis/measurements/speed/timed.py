"""What the timed measurements (kernels, attention_speed, speed) share: the workloads they run at, the
scale of their records, and the dense GEMM ceiling their utilisations divide by.

Lengths: on a GPU the study's; on a CPU the study's scaled so the model's max_seq_len maps to the
measurement's `cpu_seq_cap` (instruments/device.py). A record at a scaled length is `proxy`; at the
study's length a timing is `measured` and a formula or counter value `analytic`.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from typing import TYPE_CHECKING

import torch

from ...build import DTYPES
from ...catalog.declared.common import SEQ_LEN_REQUESTED
from ...catalog.vocabulary import Scale
from ...instruments.device import run_settings, scaled_seq_lens
from ...instruments.timing import Timing, time_fn
from ...study.schema import Study, Variant
from ..common import requested_records
from ..recorder import Recorder

if TYPE_CHECKING:
    from ...results.query import Results

GEMM_N = {"cuda": 8192, "cpu": 1024}
# Dense (no sparsity) 16-bit tensor-core peaks, FLOP/s: NVIDIA H200, H100 and A100 datasheets.
# Most specific name first: torch reports e.g. "NVIDIA H100 80GB HBM3", "NVIDIA H100 PCIe".
DATASHEET_PEAK_16BIT = (
    ("H200 NVL", 835e12),
    ("H200", 989e12),
    ("H100 PCIe", 756e12),
    ("H100 NVL", 835e12),
    ("H100", 989e12),
    ("A100", 312e12),
)


@dataclass(frozen=True)
class Workload:
    seq_len: int  # the length measured
    batch: int
    requested: tuple[int, ...]  # the study's lengths it stands for

    @property
    def scaled(self) -> bool:
        return self.requested != (self.seq_len,)

    @property
    def measured_scale(self) -> str:
        """The scale of a timing (or anything run on the model) at this workload."""
        return Scale.PROXY if self.scaled else Scale.MEASURED

    @property
    def analytic_scale(self) -> str:
        """The scale of a formula or counter value at this workload."""
        return Scale.PROXY if self.scaled else Scale.ANALYTIC


def workloads(study: Study, variant: Variant, device: str, cap: int) -> list[Workload]:
    lengths = scaled_seq_lens(study.workloads.seq_lens, variant.config.max_seq_len, device, cap)
    return [
        Workload(n, b, tuple(requested))
        for n, requested in lengths.items()
        for b in study.workloads.batch_sizes
    ]


def at_workload(rec: Recorder, w: Workload, cap: int) -> Recorder:
    """A recorder at workload `w` (scale: measured, or proxy at a scaled length), with the
    `seq_len_requested` records where the length was scaled."""
    at = rec.at(seq_len=w.seq_len, batch=w.batch, scale=w.measured_scale)
    requested_records(at, w.seq_len, list(w.requested), cap)
    return at


def one_line(exc: BaseException) -> str:
    """`Type: first line of the message`."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {text}"


def datasheet_peak(name: str, dtype: str) -> float | None:
    if dtype not in ("bfloat16", "float16"):
        return None
    return next((peak for key, peak in DATASHEET_PEAK_16BIT if key.lower() in name.lower()), None)


@cache
def gemm_ceiling(device: str, dtype: str) -> tuple[Timing, int]:
    """The dense matmul ceiling: an n x n @ n x n GEMM (2 n^3 FLOP), timed once per process."""
    n = GEMM_N["cuda" if device.startswith("cuda") else "cpu"]
    g = torch.Generator(device=device).manual_seed(0)
    pairs = [
        tuple(torch.randn(n, n, generator=g, device=device, dtype=DTYPES[dtype]) for _ in range(2))
        for _ in range(2)
    ]  # two pairs, rotated
    return time_fn(lambda ab: ab[0] @ ab[1], pairs, device=device, label="gemm", **run_settings(device)), n


def gemm_size(n: int, dtype: str) -> str:
    return f"{n}x{n}x{n} {dtype}"


# ---- for the sections -------------------------------------------------------------------------


def requested_text(results: Results, vid: str, device: str, seq_len: int, cap: int) -> str:
    """The study's length a measured length stands for (the first, where several map to one)."""
    found = results.values(SEQ_LEN_REQUESTED, variant=vid, device=device, seq_len=seq_len, cap=cap)
    return f"{int(min(v.value for v in found))}" if found else f"{int(seq_len)}"


def points(results: Results, metrics: tuple[str, ...], **where) -> list[tuple[str, int]]:
    """The (device, seq_len) pairs at which any of `metrics` has an ok value, sorted."""
    found = {
        (v.device, v.seq_len) for m in metrics for v in results.values(m, **where) if v.seq_len is not None
    }
    return sorted(found)


def first(results: Results, metric: str, **where) -> float | None:
    """The value of the first match (the smallest batch, where a study has several)."""
    found = sorted(results.values(metric, **where), key=lambda v: v.batch or 0)
    return found[0].value if found else None
