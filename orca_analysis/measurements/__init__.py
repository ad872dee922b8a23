"""Measurements, one package (or module) each; each declares itself in registry.py's registry.

Every package here is imported on first use, so adding a measurement is adding a folder (`__init__.py`: run
settings and registration; its run function and its section) and its declaration in the catalogue
(catalog/declared/<name>.py: its spec and metrics).
"""

from __future__ import annotations

import importlib
import pkgutil

from .registry import MEASUREMENTS, Measurement, Schedule, Shown, gpu_plan, in_order, register

_SHARED = {"registry", "recorder", "common"}
for _info in pkgutil.iter_modules(__path__):
    if _info.name not in _SHARED and not _info.name.startswith("_"):
        importlib.import_module(f"{__name__}.{_info.name}")


def available_measurements() -> list[str]:
    return [m.name for m in in_order()]


__all__ = [
    "MEASUREMENTS",
    "Measurement",
    "Schedule",
    "Shown",
    "available_measurements",
    "gpu_plan",
    "in_order",
    "register",
]
