"""Measurements, one module per thing measured.

Names a study may list under `measurements:`; the runner maps each to its module.
"""

KNOWN_MEASUREMENTS = ("params",)
