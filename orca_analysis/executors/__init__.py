"""Executors: where calls run. `local` (this process; isolated measurements in fresh workers),
`isolated` (every measurement in a fresh worker), `ray` (Ray tasks on a cluster; optional extra),
`budgeted` (the GPU run: groups of calls in fresh workers within a time budget).

Kept light (no torch import) so the command line can name the choices without loading them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..errors import OrcaError

if TYPE_CHECKING:
    from .base import Executor

EXECUTORS = ("local", "isolated", "ray", "budgeted")
DEFAULT_TIME_LIMIT_S = 1800.0  # per isolated measurement


def make_executor(
    name: str,
    address: str | None = None,
    time_limit: float = DEFAULT_TIME_LIMIT_S,
    budget_s: float | None = None,
) -> Executor:
    if address and name != "ray":
        raise OrcaError("--address is for --executor ray")
    if name in ("local", "isolated"):
        from .local import LocalExecutor

        return LocalExecutor(isolate_all=name == "isolated", time_limit=time_limit)
    if name == "budgeted":
        from .budgeted import BudgetedExecutor

        return BudgetedExecutor(budget_s if budget_s is not None else 450.0)
    if name == "ray":
        from .ray import RayExecutor

        return RayExecutor(address, time_limit)
    raise OrcaError(f"unknown executor '{name}': choose one of {', '.join(EXECUTORS)}")
