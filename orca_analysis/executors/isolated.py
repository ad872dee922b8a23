"""Run one call in a fresh worker process, as benchmark harnesses do for memory and timing.

Locally the worker is forked from a forkserver that has imported the measurement modules but
never measured anything (fresh allocator, no CUDA context, fast to start); elsewhere (or asked)
it is spawned. A worker that dies (out of memory, a crash) or runs past the time limit becomes
a failure outcome with its reason, and the caller goes on. A worker whose parent is killed
stops itself, so a killed sweep leaves no measurement running on the GPU.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import pickle
import signal
import threading
import time
from multiprocessing.connection import Connection

from . import DEFAULT_TIME_LIMIT_S
from .base import Call, Outcome, failure, one_line, run_call

_PRELOAD = ["orca_analysis.measurements"]


def worker_context(method: str | None = None) -> mp.context.BaseContext:
    if method is None:
        method = "forkserver" if "forkserver" in mp.get_all_start_methods() else "spawn"
    ctx = mp.get_context(method)
    if method == "forkserver":
        # The server must not initialise CUDA, or its forked workers cannot use it: should a module
        # ask torch.cuda.is_available() at import, answer through NVML (the server inherits this).
        os.environ.setdefault("PYTORCH_NVML_BASED_CUDA_CHECK", "1")
        ctx.set_forkserver_preload(_PRELOAD)
    return ctx


def _watch_parent(parent_pid: int) -> None:
    while True:
        time.sleep(1.0)
        try:
            os.kill(parent_pid, 0)
        except ProcessLookupError:
            os._exit(3)


def _worker(payload: bytes, conn: Connection, parent_pid: int) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle: it stops us
    threading.Thread(target=_watch_parent, args=(parent_pid,), daemon=True).start()
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


def run_isolated(call: Call, time_limit: float = DEFAULT_TIME_LIMIT_S, method: str | None = None) -> Outcome:
    """Run `call` in a fresh process; always returns an outcome (Ctrl-C stops the worker and re-raises)."""
    start = time.perf_counter()
    try:
        payload = pickle.dumps(call)
    except Exception as exc:  # noqa: BLE001
        return failure(call, f"cannot send the measurement to a worker: {one_line(exc)}", 0.0, "in-process")
    ctx = worker_context(method)
    receive, send = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_worker, args=(payload, send, os.getpid()), name=f"orca-{call.label}")
    try:
        proc.start()
        send.close()  # only the worker holds the sending end: EOF on receive means it is gone
        source = f"worker pid {proc.pid}"
        while True:
            if receive.poll(0.2):
                try:
                    kind, value = receive.recv()
                except EOFError:
                    break
                proc.join(10)
                if kind == "outcome":
                    return value
                return failure(call, value, time.perf_counter() - start, source)
            if time.perf_counter() - start > time_limit:
                proc.kill()
                proc.join()
                return failure(
                    call, f"time limit {time_limit:g} s exceeded: worker stopped", time_limit, source
                )
        proc.join()
        return failure(call, death_reason(proc.exitcode), time.perf_counter() - start, source)
    finally:
        if proc.pid is not None and proc.is_alive():
            proc.kill()
            proc.join()
        receive.close()
