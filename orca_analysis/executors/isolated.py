"""Run one call in a fresh worker process, as benchmark harnesses do for memory and timing.

Locally the worker is forked from a forkserver (forkserver.py); elsewhere (or asked) it is
spawned. A worker that dies (out of memory, a crash) or runs past the time limit becomes
a failure outcome with its reason, and the caller goes on. A worker whose parent is killed
stops itself, so a killed sweep leaves no measurement running on the GPU.
"""

from __future__ import annotations

import os
import pickle
import signal
import threading
import time
from collections.abc import Iterator
from multiprocessing.connection import Connection

from . import DEFAULT_TIME_LIMIT_S
from .base import Call, Outcome, failure, one_line, run_call
from .forkserver import worker_context


def _watch_parent(parent_pid: int) -> None:
    while True:
        time.sleep(1.0)
        try:
            os.kill(parent_pid, 0)
        except ProcessLookupError:
            os._exit(3)


def start_worker(parent_pid: int) -> None:
    """What every worker does first: Ctrl-C is the parent's to handle (it stops us), and a worker whose
    parent is gone (killed: SIGKILL, the OOM killer) exits within a second, measuring or waiting."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    threading.Thread(target=_watch_parent, args=(parent_pid,), daemon=True).start()


def _worker(payload: bytes, conn: Connection, parent_pid: int) -> None:
    start_worker(parent_pid)
    try:
        call: Call = pickle.loads(payload)
        message = ("outcome", run_call(call, f"worker pid {os.getpid()}"))
    except Exception as exc:  # noqa: BLE001  (e.g. a measurement the worker cannot import)
        message = ("unpickle", f"worker could not load the measurement: {one_line(exc)}")
    try:
        conn.send(message)
        conn.close()
    except OSError:  # the parent stopped listening (interrupted): nobody to tell
        os._exit(4)


def death_reason(exitcode: int | None) -> str:
    if exitcode is not None and exitcode < 0:
        sig = signal.Signals(-exitcode)
        if sig == signal.SIGKILL:
            return "worker killed (SIGKILL): out of memory, or killed from outside"
        return f"worker crashed ({sig.name})"
    return f"worker exited with code {exitcode} before returning a result"


class _Worker:
    """One call in its own fresh process: started at once, polled without blocking, stopped on exit."""

    def __init__(self, call: Call, time_limit: float, method: str | None = None):
        self.call, self.time_limit, self.start = call, time_limit, time.perf_counter()
        self.proc, self.outcome = None, None
        try:
            payload = pickle.dumps(call)
        except Exception as exc:  # noqa: BLE001
            self.outcome = failure(
                call, f"cannot send the measurement to a worker: {one_line(exc)}", 0.0, "in-process"
            )
            return
        ctx = worker_context(method)
        self.receive, send = ctx.Pipe(duplex=False)
        self.proc = ctx.Process(target=_worker, args=(payload, send, os.getpid()), name=f"orca-{call.label}")
        self.proc.start()
        send.close()  # only the worker holds the sending end: EOF on receive means it is gone
        self.source = f"worker pid {self.proc.pid}"

    def poll(self, wait: float = 0.0) -> Outcome | None:
        """The outcome once there is one (the worker's, its death, or the time limit's), else None."""
        if self.outcome is not None:
            return self.outcome
        elapsed = time.perf_counter() - self.start
        if self.receive.poll(wait):
            try:
                kind, value = self.receive.recv()
            except EOFError:  # gone without a word
                self.proc.join()
                return failure(self.call, death_reason(self.proc.exitcode), elapsed, self.source)
            self.proc.join(10)
            return value if kind == "outcome" else failure(self.call, value, elapsed, self.source)
        if elapsed > self.time_limit:
            self.stop()
            return failure(
                self.call,
                f"time limit {self.time_limit:g} s exceeded: worker stopped",
                self.time_limit,
                self.source,
            )
        if not self.proc.is_alive() and not self.receive.poll(0):
            self.proc.join()
            return failure(self.call, death_reason(self.proc.exitcode), elapsed, self.source)
        return None

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.pid is not None and self.proc.is_alive():
            self.proc.kill()
            self.proc.join()
        self.receive.close()


def run_isolated(call: Call, time_limit: float = DEFAULT_TIME_LIMIT_S, method: str | None = None) -> Outcome:
    """Run `call` in a fresh process; always returns an outcome (Ctrl-C stops the worker and re-raises)."""
    return next(run_isolated_many([call], time_limit, 1, method))


def run_isolated_many(
    calls: list[Call], time_limit: float = DEFAULT_TIME_LIMIT_S, workers: int = 1, method: str | None = None
) -> Iterator[Outcome]:
    """Each call in its own fresh process, up to `workers` at once; outcomes as they finish. Whatever
    is still running when the caller stops (Ctrl-C, an error) is killed."""
    pending, running = list(calls), []
    try:
        while pending or running:
            while pending and len(running) < workers:
                running.append(_Worker(pending.pop(0), time_limit, method))
            for w in list(running):
                outcome = w.poll(0.2 if len(running) == 1 else 0.0)
                if outcome is not None:
                    running.remove(w)
                    w.stop()
                    yield outcome
            if len(running) > 1:
                time.sleep(0.05)
    finally:
        for w in running:
            w.stop()
