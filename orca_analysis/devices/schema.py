"""The device catalogue: accelerators a design is forecast on, a YAML data file with a schema, loaded
strictly (like the study and the catalogues). Each device states its memory, bandwidth, SM count,
compute capability and dense peak throughput per dtype, with its source; a user adds devices in a file
of their own (same schema), which extends the built-in one.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from ..errors import OrcaError
from ..study.kwargs import did_you_mean

DEFAULT_DEVICES = Path(str(resources.files(__package__) / "catalogue.yaml"))  # package data
DEVICE_KEYS = (
    "name",
    "memory_bytes",
    "bandwidth_bytes_per_s",
    "sms",
    "compute_capability",
    "peak_flops",
    "source",
    "unverified",
)
REQUIRED = DEVICE_KEYS[:-1]
PEAK_DTYPES = ("float32", "tf32", "bfloat16", "float16", "float8")  # float32: without tensor cores


class DeviceError(OrcaError):
    """The device catalogue is missing or malformed, or names an unknown device."""


@dataclass(frozen=True)
class Device:
    id: str
    name: str
    memory_bytes: int
    bandwidth_bytes_per_s: float
    sms: int
    compute_capability: tuple[int, int]  # (major, minor): "9.0" -> (9, 0)
    peak_flops: dict[str, float | None]  # dtype -> dense FLOP/s; None: no such unit
    source: str
    unverified: tuple[str, ...] = field(default_factory=tuple)

    @property
    def sm(self) -> int:
        """The compute capability as torch's checks compare it: 9.0 -> 90."""
        return 10 * self.compute_capability[0] + self.compute_capability[1]


def _number(where: str, key: str, value: Any, problems: list[str], integer: bool = False) -> Any:
    ok = isinstance(value, int) if integer else isinstance(value, int | float)
    if isinstance(value, bool) or not ok or value <= 0:
        kind = "a positive integer" if integer else "a positive number"
        problems.append(f"{where}: '{key}' must be {kind}, got {value!r}")
        return None
    return value


def _device(dev_id: str, raw: Any, source: str) -> tuple[Device | None, list[str]]:
    where, problems = f"{source}: device '{dev_id}'", []
    if not isinstance(raw, dict):
        return None, [f"{where}: must be a mapping with keys {', '.join(REQUIRED)}"]
    for key in raw:
        if key not in DEVICE_KEYS:
            problems.append(f"{where}: unknown key '{key}'{did_you_mean(str(key), list(DEVICE_KEYS))}")
    problems += [f"{where}: missing required key '{k}'" for k in REQUIRED if k not in raw]
    if problems:
        return None, problems
    memory = _number(where, "memory_bytes", raw["memory_bytes"], problems, integer=True)
    bandwidth = _number(where, "bandwidth_bytes_per_s", raw["bandwidth_bytes_per_s"], problems)
    sms = _number(where, "sms", raw["sms"], problems, integer=True)
    cc = str(raw["compute_capability"])
    major, dot, minor = cc.partition(".")
    if not (dot and major.isdigit() and minor.isdigit()):
        problems.append(
            f"{where}: 'compute_capability' must be MAJOR.MINOR in quotes, e.g. \"9.0\", got {cc!r}"
        )
    peaks = raw["peak_flops"]
    if not isinstance(peaks, dict) or not peaks:
        problems.append(f"{where}: 'peak_flops' must map dtypes ({', '.join(PEAK_DTYPES)}) to FLOP/s")
        peaks = {}
    for dtype, value in peaks.items():
        if dtype not in PEAK_DTYPES:
            problems.append(
                f"{where}: peak_flops: unknown dtype '{dtype}'{did_you_mean(str(dtype), list(PEAK_DTYPES))}"
            )
        elif value is not None:
            _number(where, f"peak_flops.{dtype}", value, problems)
    if "float32" not in peaks:
        problems.append(f"{where}: peak_flops needs 'float32'")
    unverified = raw.get("unverified") or []
    if not isinstance(unverified, list) or any(k not in DEVICE_KEYS for k in unverified):
        problems.append(f"{where}: 'unverified' must list keys of the device, got {unverified!r}")
    if problems:
        return None, problems
    return Device(
        dev_id,
        str(raw["name"]),
        memory,
        float(bandwidth),
        sms,
        (int(major), int(minor)),
        {d: (None if v is None else float(v)) for d, v in peaks.items()},
        str(raw["source"]),
        tuple(unverified),
    ), []


def load_devices(extra: Path | str | None = None) -> dict[str, Device]:
    """The built-in devices, extended (or overridden, by id) by the user's file `extra`."""
    devices: dict[str, Device] = {}
    for path in (DEFAULT_DEVICES, *([Path(extra)] if extra else [])):
        if not path.is_file():
            raise DeviceError(f"device catalogue not found: {path}")
        try:
            data = yaml.safe_load(path.read_text())
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            raise DeviceError(f"{path}: line {mark.line + 1 if mark else '?'}: malformed YAML") from None
        if not isinstance(data, dict) or set(data) != {"devices"} or not isinstance(data["devices"], dict):
            raise DeviceError(f"{path}: a device catalogue is a mapping with one key, 'devices'")
        problems = []
        for dev_id, raw in data["devices"].items():
            device, found = _device(str(dev_id), raw, str(path))
            problems += found
            if device is not None:
                devices[device.id] = device
        if problems:
            raise DeviceError(problems)
    return devices


def device(name: str, extra: Path | str | None = None) -> Device:
    """One device by its id (`h100-sxm-80gb`), or by a unique prefix of it (`h100`)."""
    devices = load_devices(extra)
    if name in devices:
        return devices[name]
    matches = [d for d in devices if d.startswith(name.lower())]
    if len(matches) == 1:
        return devices[matches[0]]
    raise DeviceError(
        f"unknown device '{name}'{did_you_mean(name, list(devices))} (known: {', '.join(devices)})"
    )
