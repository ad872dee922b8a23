"""Devices: the accelerators a design is forecast on (a catalogue with a schema, loaded strictly)."""

from .schema import PEAK_DTYPES, Device, DeviceError, device, load_devices

__all__ = ["PEAK_DTYPES", "Device", "DeviceError", "device", "load_devices"]
