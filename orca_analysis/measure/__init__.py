"""Measurements, one module per thing measured; each registers itself (see registry.py).

Every module in this package is imported here, so adding a measurement is adding a file.
"""

from __future__ import annotations

import importlib
import pkgutil

from .registry import MEASUREMENTS, Measurement, register_measurement

for _info in pkgutil.iter_modules(__path__):
    if _info.name != "registry" and not _info.name.startswith("_"):
        importlib.import_module(f"{__name__}.{_info.name}")


def available_measurements() -> list[str]:
    return list(MEASUREMENTS)


__all__ = ["MEASUREMENTS", "Measurement", "available_measurements", "register_measurement"]
