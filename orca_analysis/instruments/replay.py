"""A step's allocation timeline, and its peak replayed at any batch from the timelines of two walks.

The tracker (instruments/tracker.py) checks the peak after every operator: the peak is the largest total of
the storages alive at those checks. `TimelineTracker` records, in order, each storage it adds, resizes and
drops with its raw bytes (before the allocator's rounding), and each check.

Walk the same step at batch 2 and at batch 3. Where the two timelines have the same events between each pair
of checks (the code took no branch on the batch; within the span between two checks the order does not move
a total, and the garbage collector's order of drops varies, so each span is compared in slot order), the k-th
storage of one is the k-th of the other, and its bytes are affine in the batch when every tensor's element
count is (a batch dimension, or none): at batch B >= 2 a storage holds r2 + (B - 2) (r3 - r2) bytes.
`Replay.peak(B)` rounds each to the allocator's block as the tracker does and takes the largest total at the
checks: the tracker's own number at batch B, without a walk. Batch 1 is not on the line: a dimension of size
one lets a strided tensor be viewed, so a batch of one skips copies a larger batch makes (Orca's training step:
the backward of the logits' transpose is a view at batch 1, a clone at batch 2 and beyond). Where r3 >= r2 for every
storage the peak never falls as the batch grows, so the largest batch that fits is found by search. Both are
checked: the replay must give the two walks' own peaks, and instruments/max_batch.py walks the answer and
compares it with the replay to the byte.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from .tracker import _Tracker

ADD, SIZE, DROP, CHECK = range(4)  # a storage added, resized, dropped; a peak check
Event = tuple[int, int, int]  # (kind, slot, raw bytes): slot numbers the storages in the order they came


class TimelineTracker(_Tracker):
    """The tracker (the same numbers), also recording its timeline (`timeline`: a list of Events)."""

    def __init__(self, alibi: bool = False, cuda: bool = False) -> None:
        super().__init__(alibi, cuda)
        self.timeline: list[Event] = []
        self._slots: dict[int, int] = {}  # id(winfo) of a live storage -> its slot
        self._made = 0

    def _update_snap(self, u_type: Any, winfo: Any, *args: Any, **kwargs: Any) -> None:
        super()._update_snap(u_type, winfo, *args, **kwargs)
        kind = u_type.name
        if kind == "ADD":
            self._slots[id(winfo)] = self._made
            self.timeline.append((ADD, self._made, winfo.size * winfo.element_size))
            self._made += 1
        elif kind == "SIZE":
            self.timeline.append((SIZE, self._slots[id(winfo)], winfo.size * winfo.element_size))
        elif kind == "DEL":
            self.timeline.append((DROP, self._slots.pop(id(winfo)), 0))

    def _update_peak_stats(self, peak_state: Any) -> None:
        super()._update_peak_stats(peak_state)
        self.timeline.append((CHECK, -1, 0))


@dataclass(frozen=True)
class Replay:
    """A step's peak at any batch from `base` on, from its timelines at `base` and `base + 1` (module
    docstring)."""

    plus: np.ndarray  # per event: the size record it adds (-1: none)
    minus: np.ndarray  # per event: the size record it takes away (-1: none)
    checks: np.ndarray  # the events that are peak checks
    raw_a: np.ndarray  # per size record (an ADD or a SIZE event): raw bytes at batch `base`
    raw_b: np.ndarray  # the same at `base + 1`
    block: int  # the allocator's rounding (1: none)
    base: int = 2

    @property
    def monotone(self) -> bool:
        """No storage shrinks as the batch grows: the peak never falls."""
        return bool((self.raw_b >= self.raw_a).all())

    def peak(self, batch: int) -> int:
        """The tracker's peak of the step at `batch` (>= base), in bytes."""
        if batch < self.base:
            raise ValueError(f"a replay from batch {self.base} cannot give batch {batch}")
        raw = self.raw_a + (batch - self.base) * (self.raw_b - self.raw_a)
        rounded = -(-raw // self.block) * self.block
        sized = np.append(rounded, 0)  # index -1: nothing
        total = np.cumsum(sized[self.plus] - sized[self.minus])
        return int(total[self.checks].max(initial=0))


def canonical(timeline: list[Event]) -> list[Event]:
    """The timeline up to its last check, each span between checks in slot order (stable: a storage's own
    events keep their order)."""
    out: list[Event] = []
    span: list[Event] = []
    for event in timeline:
        if event[0] == CHECK:
            out += sorted(span, key=lambda e: e[1])
            out.append(event)
            span = []
        else:
            span.append(event)
    return out


def replay(a: list[Event] | None, b: list[Event] | None, block: int, base: int = 2) -> Replay | None:
    """The Replay of a step walked at batch `base` (`a`) and `base + 1` (`b`); None where the timelines differ
    in their events (the code branched on the batch) or one is missing."""
    if a is None or b is None:
        return None
    a, b = canonical(a), canonical(b)
    if len(a) != len(b):
        return None
    plus, minus, checks, raw_a, raw_b = [], [], [], [], []
    last: dict[int, int] = {}  # slot -> its latest size record
    for i, ((k1, s1, r1), (k2, s2, r2)) in enumerate(zip(a, b, strict=True)):
        if (k1, s1) != (k2, s2) or r1 < 0 or r2 < 0:
            return None
        p = m = -1
        if k1 in (ADD, SIZE):
            m = last.get(s1, -1) if k1 == SIZE else -1
            p = last[s1] = len(raw_a)
            raw_a.append(r1)
            raw_b.append(r2)
        elif k1 == DROP:
            m = last.pop(s1, -1)
        else:
            checks.append(i)
        plus.append(p)
        minus.append(m)
    as_int = lambda xs: np.asarray(xs, dtype=np.int64)  # noqa: E731
    return Replay(as_int(plus), as_int(minus), as_int(checks), as_int(raw_a), as_int(raw_b), block, base)
