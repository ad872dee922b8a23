"""One `run` per store at a time: an advisory lock on `reports/<study>/.lock`, held for the whole run.

A second run on the same store waits for the first, saying which process holds it, and then plans
against what the first stored: nothing is measured twice. The kernel drops the lock when its holder
exits, however it exits (a crash or SIGKILL leaves no stale lock). Where fcntl is missing (Windows)
runs are not serialised, and the store stays consistent as before (SQLite in WAL mode).
"""

from __future__ import annotations

import datetime as dt
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

try:
    import fcntl
except ImportError:  # pragma: no cover  (Windows)
    fcntl = None  # type: ignore[assignment]

LOCK_NAME = ".lock"
POLL_S = 0.5


def holder(path: Path) -> str:
    """What the lock file says of its holder: 'PID 123 since 2026-12-02 06:20:01 UTC' (or '')."""
    try:
        return path.read_text().strip()
    except OSError:
        return ""


@contextmanager
def store_lock(folder: Path, log: IO[str], wait: bool = True) -> Iterator[None]:
    """Hold `folder/.lock` (exclusive) for the block; if another run holds it, say so and wait."""
    if fcntl is None:
        yield
        return
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / LOCK_NAME
    with open(path, "a+") as fh:
        if not _try(fh):
            print(
                f"waiting: the store in {folder} is in use by another run ({holder(path) or 'PID unknown'})",
                file=log,
                flush=True,
            )
            if not wait:
                raise BlockingIOError(f"the store in {folder} is in use ({holder(path)})")
            start = time.monotonic()
            while not _try(fh):
                time.sleep(POLL_S)
            print(
                f"the other run finished; went on after {time.monotonic() - start:.1f} s",
                file=log,
                flush=True,
            )
        fh.seek(0)
        fh.truncate()
        fh.write(f"PID {os.getpid()} since {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M:%S} UTC\n")
        fh.flush()
        try:
            yield
        finally:
            fh.seek(0)
            fh.truncate()
            fh.flush()
            fcntl.flock(fh, fcntl.LOCK_UN)


def _try(fh: IO[str]) -> bool:
    try:
        fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False
