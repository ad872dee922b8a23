"""The largest batch that fits a GPU at a length, forecast from simulated walks (instruments/gpu_forecast.py).

The largest batch: walks at batch 1 and 2 record each step's allocation timeline (instruments/replay.py).
Where the two timelines have the same events, each storage's bytes are affine in the batch and the tracker's
peak at any batch is replayed exactly, rounding included, without a walk: the answer b is the largest batch
whose replayed peak fits the device's memory (the replayed peak never falls as the batch grows). It is then
checked by a walk at b, whose peak must equal the replay's to the byte; b + 1 does not fit by the same
replay. Where the timelines differ (the code branched on the batch) or the check fails, the answer comes from
walks (`walked_max_batch`): the line through the peaks at batch 1 and 2, checked by walks at b and b + 1,
refitted through the two walks nearest the limit (`SECANTS` times at most), then bisected; where the peak is
flat at batch 1 and 2 (the optimizer step, whose foreach temporaries are parameter-sized, holds it) the batch
is doubled until the peak grows. The method says which.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from ..devices import Device
from ..study.schema import ModelConfig
from .gpu_forecast import StepMemory, Walk, memories_of, peaks_at, step_memory
from .gpu_memory import ALLOCATOR_BLOCK, POLICIES
from .replay import Replay, replay

SECANTS = 3
MAX_DOUBLED = 2**20  # the largest batch searched where the peak does not pass the memory
NOT_REPLAYED = "not replayed"  # the method of an answer from walks alone says why, after these words
BATCH_STEPS = ("train", "prefill")  # the steps whose largest batch is asked for (decode's follows prefill's)


@dataclass(frozen=True)
class MaxBatch:
    step: str
    seq_len: int
    batch: int  # 0: not even one sequence fits
    intercept: int  # bytes at batch 0 and per sequence: the line through the peaks at `batch` and one more
    slope: int  # (replayed), else through the walks at batch 1 and 2
    peak: int | None  # the checked walk's peak at `batch`
    method: str
    replayed: bool = False  # from the replay (or the walks at batch 1 and 2) and checked; else walks alone


Walked = tuple[StepMemory, StepMemory, StepMemory]  # a step walked at batch 1, 2 and 3


def max_batches(
    cfg: ModelConfig,
    device: Device,
    policy: str,
    seq_len: int,
    at_1: Walk | None = None,
    steps: tuple[str, ...] = BATCH_STEPS,
) -> dict[str, MaxBatch]:
    """`max_batch` of each step: the walks at batch 1, 2 and 3 shared by the steps (batch 1 from `at_1`, a walk
    at batch 1 the caller made, where given), the checks of every step in one more build."""
    walked = walks_at_1_2_3(cfg, device, policy, seq_len, steps, at_1)
    return largest_batches(cfg, [device], policy, seq_len, walked)[device.id]


def walks_at_1_2_3(
    cfg: ModelConfig,
    device: Device,
    policy: str,
    seq_len: int,
    steps: tuple[str, ...] = BATCH_STEPS,
    at_1: Walk | None = None,
) -> dict[str, Walked]:
    """Each step walked at batch 1, 2 and 3 (batch 1 from `at_1` where given): one build."""
    batches = (2, 3) if at_1 is not None else (1, 2, 3)
    walked = memories_of(cfg, device, policy, {(seq_len, b): steps for b in batches})
    one = at_1.memory if at_1 is not None else walked[(seq_len, 1)]
    return {
        s: (one.get(s, step_memory(s, None)), walked[(seq_len, 2)][s], walked[(seq_len, 3)][s]) for s in steps
    }


def largest_batches(
    cfg: ModelConfig, devices: list[Device], policy: str, seq_len: int, walked: dict[str, Walked]
) -> dict[str, dict[str, MaxBatch]]:
    """{device id: {step: MaxBatch}}: each step's answer from its walks at batch 1, 2 and 3, replayed beyond
    them (module docstring), the answers checked by walks in one more build; where there is no replay or a
    check fails, from walks alone (`walked_max_batch`)."""
    replays, answers, why = {}, {}, {}
    for step, (one, two, three) in walked.items():
        rep = replay(two.timeline, three.timeline, ALLOCATOR_BLOCK)
        why[step] = _unreplayable(rep, one, two, three)
        if not why[step]:
            replays[step] = rep
            for device in devices:
                answers[(device.id, step)] = _search(rep, one.peak, device.memory_bytes)
    jobs: dict[tuple[int, int], tuple[str, ...]] = {}
    for (_, step), b in answers.items():
        if b > 3:  # batches 1, 2 and 3 are walked already
            jobs[(seq_len, b)] = tuple(dict.fromkeys((*jobs.get((seq_len, b), ()), step)))
    checked = memories_of(cfg, devices[0], policy, jobs) if jobs else {}
    for step, (one, two, three) in walked.items():
        for b, m in ((1, one), (2, two), (3, three)):
            checked.setdefault((seq_len, b), {})[step] = m
    out: dict[str, dict[str, MaxBatch]] = {d.id: {} for d in devices}
    for device in devices:
        for step, (one, two, _) in walked.items():
            b = answers.get((device.id, step))
            if b is not None:
                mb = _replayed(step, seq_len, device, replays[step], b, one, two, checked)
                if mb is not None:
                    out[device.id][step] = mb
                    continue
                why[step] = (
                    f"the walk at {b} gave {checked[(seq_len, b)][step].peak} B where the replay gave "
                    f"{replays[step].peak(b):,} B"
                )
            mb = walked_max_batch(cfg, device, policy, seq_len, step, (one.peak, two.peak))
            out[device.id][step] = dataclasses.replace(
                mb, method=f"{mb.method} ({NOT_REPLAYED}: {why[step]})"
            )
    return out


def _unreplayable(rep: Replay | None, one: StepMemory, two: StepMemory, three: StepMemory) -> str:
    """Why a step's answer cannot be replayed from its walks at batch 2 and 3, or ''."""
    if one.peak is None or two.peak is None or three.peak is None:
        return "the step could not be walked"
    if rep is None:
        return "the timelines at batch 2 and 3 differ in their events"
    if not rep.monotone:
        return "a storage shrinks as the batch grows"
    if (rep.peak(2), rep.peak(3)) != (two.peak, three.peak):
        return (
            f"the replay gives {rep.peak(2):,} and {rep.peak(3):,} B where the walks at batch 2 and 3 gave "
            f"{two.peak:,} and {three.peak:,} B"
        )
    return ""


def _search(rep: Replay, at_1: int, cap: int) -> int:
    """The largest batch whose peak is within `cap`: the walk's at batch 1, the replay's from 2 (0: not even
    one; MAX_DOUBLED at most)."""
    if at_1 > cap:
        return 0
    if rep.peak(2) > cap:
        return 1
    lo, hi = 2, 4
    while hi < MAX_DOUBLED and rep.peak(hi) <= cap:
        lo, hi = hi, hi * 2
    if rep.peak(hi) <= cap:
        return hi
    while hi - lo > 1:  # lo fits, hi does not
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if rep.peak(mid) <= cap else (lo, mid)
    return lo


def _replayed(
    step: str,
    seq_len: int,
    device: Device,
    rep: Replay,
    b: int,
    one: StepMemory,
    two: StepMemory,
    checked: dict[tuple[int, int], dict[str, StepMemory]],
) -> MaxBatch | None:
    """The answer `b` with its check, or None where the walk at b disagrees with the replay."""
    cap = device.memory_bytes
    line = (2 * one.peak - two.peak, two.peak - one.peak)  # through the walks at batch 1 and 2
    if b == 0:
        return MaxBatch(step, seq_len, 0, *line, one.peak, f"batch 1 needs {one.peak:,} B > {cap:,} B", True)
    if b == 1:
        how = f"walked: batch 1 fits ({one.peak:,} B), batch 2 does not ({two.peak:,} B)"
        return MaxBatch(step, seq_len, 1, *line, one.peak, how, True)
    at_b, at_next = rep.peak(b), rep.peak(b + 1)
    walked = checked[(seq_len, b)][step].peak
    if walked != at_b:
        return None
    flat = (
        " (the peak is flat at batch 2 and 3: a phase that does not grow with the batch holds it)"
        if rep.peak(2) == rep.peak(3)
        else ""
    )
    base = (
        "replayed from the allocation timelines of the walks at batch 2 and 3 (each storage's bytes affine in "
        f"the batch, rounded to {ALLOCATOR_BLOCK} B){flat}"
    )
    slope = at_next - at_b
    if at_next <= cap:  # the search stopped at MAX_DOUBLED
        how = (
            f"{base}: the peak stays within the memory up to batch {b:,}; checked by a walk at {b:,} (the "
            f"replay's {at_b:,} B, to the byte)"
        )
    else:
        how = (
            f"{base}: {b:,} fits ({at_b:,} B), {b + 1:,} does not ({at_next:,} B); checked by a walk at {b:,} "
            "(the replay's peak, to the byte)"
        )
    return MaxBatch(step, seq_len, b, at_b - slope * b, slope, walked, how, True)


def max_batch(cfg: ModelConfig, device: Device, policy: str, seq_len: int, step: str = "train") -> MaxBatch:
    """The largest batch whose `step` fits `device` at `seq_len` (module docstring)."""
    if policy not in POLICIES:
        raise ValueError(f"unknown dtype policy {policy!r}")
    walked = walks_at_1_2_3(cfg, device, policy, seq_len, (step,))
    return largest_batches(cfg, [device], policy, seq_len, walked)[device.id][step]


def walked_max_batch(
    cfg: ModelConfig,
    device: Device,
    policy: str,
    seq_len: int,
    step: str = "train",
    at_1_and_2: tuple[int, int] | None = None,
) -> MaxBatch:
    """The largest batch whose `step` fits `device` at `seq_len`, from walks alone (module docstring);
    `at_1_and_2`: the peaks at batch 1 and 2 where a caller has them."""
    if policy not in POLICIES:
        raise ValueError(f"unknown dtype policy {policy!r}")
    p1, p2 = at_1_and_2 or tuple(peaks_at(cfg, device, policy, seq_len, (1, 2), step).values())
    cap = device.memory_bytes
    if p1 is None or p2 is None:
        return MaxBatch(step, seq_len, 0, 0, 0, None, "the step could not be walked")
    slope, intercept = p2 - p1, 2 * p1 - p2
    if p1 > cap:
        return MaxBatch(step, seq_len, 0, intercept, slope, p1, f"batch 1 needs {p1:,} B > {cap:,} B")
    at: dict[int, int | None] = {1: p1, 2: p2}
    start = "affine from the walks at batch 1 and 2"
    if slope <= 0:  # a phase that does not grow with the batch (the optimizer step) holds the peak: double
        b = 2
        while at[b] is not None and at[b] <= p1 and b < MAX_DOUBLED:
            b *= 2
            at |= peaks_at(cfg, device, policy, seq_len, (b,), step)
        if at[b] is None or at[b] <= p1:
            why = "could not be walked" if at[b] is None else "does not grow"
            return MaxBatch(
                step,
                seq_len,
                0 if at[b] is None else b,
                intercept,
                0,
                at[b],
                f"the peak {why} at batch {b} (doubled from 2; it is flat at batch 1 and 2)",
            )
        slope = max(1, (at[b] - at[b // 2]) // (b - b // 2))
        intercept, start = (
            at[b] - slope * b,
            (
                f"flat at batch 1 and 2 (a phase that does not grow with the batch "
                f"holds the peak), doubled to {b}; affine from the walks at "
                f"{b // 2} and {b}"
            ),
        )
    affine = b = max(1, (cap - intercept) // slope)
    fits = lambda b: at[b] is not None and at[b] <= cap  # noqa: E731
    for attempt in range(SECANTS + 1):
        at |= peaks_at(cfg, device, policy, seq_len, (b, b + 1), step)
        if fits(b) and not fits(b + 1):
            how = f"{start}, checked by walks at {b} (fits) and {b + 1} (does not)"
            if attempt:
                how = (
                    f"{start} ({affine}), refitted through the walks nearest the limit ({attempt}x), checked "
                    f"by walks at {b} (fits) and {b + 1} (does not)"
                )
            return MaxBatch(step, seq_len, b, intercept, slope, at[b], how)
        (b1, q1), (b2, q2) = sorted(
            ((k, v) for k, v in at.items() if v is not None), key=lambda kv: abs(kv[1] - cap)
        )[:2]
        if q1 == q2:
            break
        b = max(1, int(b1 + (cap - q1) * (b2 - b1) / (q2 - q1)))  # the secant through the two nearest walks
    lo = max((k for k in at if fits(k)), default=0)  # bisect: lo fits (or is 0), hi does not
    hi = min(k for k in at if not fits(k))
    while hi - lo > 1:
        mid = (lo + hi) // 2
        at |= peaks_at(cfg, device, policy, seq_len, (mid,), step)
        lo, hi = (mid, hi) if fits(mid) else (lo, mid)
    how = (
        f"the affine answer ({affine}; {start}) and {SECANTS} refits failed their "
        f"checks; bisected: {lo} fits, {hi} does not ({len(at)} walks; the peak is not affine here)"
    )
    return MaxBatch(step, seq_len, lo, intercept, slope, at.get(lo), how)
