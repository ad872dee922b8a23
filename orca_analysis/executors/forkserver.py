"""Where fresh workers come from, kept light (no torch import): the command line starts the server early.

Locally workers fork from a forkserver that has imported the measurement modules but never measured
anything (fresh allocator, no CUDA context, fast to start); elsewhere (or asked) they are spawned.
"""

from __future__ import annotations

import multiprocessing as mp
import os

PRELOAD = ["orca_analysis.measurements"]


def worker_context(method: str | None = None) -> mp.context.BaseContext:
    if method is None:
        method = "forkserver" if "forkserver" in mp.get_all_start_methods() else "spawn"
    ctx = mp.get_context(method)
    if method == "forkserver":
        # The server must not initialise CUDA, or its forked workers cannot use it: should a module
        # ask torch.cuda.is_available() at import, answer through NVML (the server inherits this).
        os.environ.setdefault("PYTORCH_NVML_BASED_CUDA_CHECK", "1")
        ctx.set_forkserver_preload(PRELOAD)
    return ctx


def start_early() -> None:
    """Start the forkserver now, so its imports (seconds: torch, x-transformers) overlap this process's own
    instead of following them when the first worker is asked for. Nothing happens where there is none."""
    if worker_context()._name == "forkserver":  # noqa: SLF001  (the context's start method)
        from multiprocessing import forkserver

        forkserver.ensure_running()
