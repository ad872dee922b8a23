"""The measurements' declarations, in the catalogue: one module per measurement, named as the measurement,
each with its `SPEC` (catalog/specs.py: the name, the version the store keys its results by, its corpus use)
and its `METRICS`. The registry (catalog/metrics.py) is filled from them here, when the catalogue is
imported, before any layer above can name a metric or a measurement. Each module binds each of its
metrics to a constant, its name in capitals (`PEAK_TRAIN`), which the code names it by; a measurement registers
(measurements/registry.py) only under a spec declared here."""

from __future__ import annotations

import importlib
import pkgutil
from types import ModuleType

from ..metrics import Metric, declare
from ..specs import Spec


def unbound(module: ModuleType) -> list[Metric]:
    """The metrics of a declaration module's METRICS that no constant of their name in capitals holds."""
    return [m for m in module.METRICS if getattr(module, m.upper(), None) is not m]


SPECS: dict[str, Spec] = {}  # measurement name -> its spec
BUILTIN: dict[str, tuple[Metric, ...]] = {}  # measurement name -> its metrics
for _info in pkgutil.iter_modules(__path__):
    _module = importlib.import_module(f"{__name__}.{_info.name}")
    if hasattr(_module, "SPEC"):  # (common.py holds metrics several measurements share)
        if _module.SPEC.name != _info.name:
            raise ValueError(f"catalog/declared/{_info.name}.py declares the spec of '{_module.SPEC.name}'")
        SPECS[_info.name], BUILTIN[_info.name] = _module.SPEC, _module.METRICS
        _unbound = unbound(_module)
        if _unbound:  # code names a metric by its constant: each must be bound, to its own declaration
            raise ValueError(
                f"catalog/declared/{_info.name}.py binds no constant {_unbound[0].upper()} to its "
                f"metric '{_unbound[0]}'"
            )
        declare(_info.name, _module.METRICS)
