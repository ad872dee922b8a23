"""The catalogue layer: data about the data, at the bottom of the package. It imports nothing of the package
above it, and everything may import it. It holds each measurement's spec and metrics (declared/, registered
in metrics.py's registry when the catalogue is imported), the built-in claims and remedy catalogues and their
reader (files.py), the findings the report states and the remedy catalogue names (findings.py), and the
version."""

from . import declared  # noqa: F401  (fills the metric registry: every metric is known once the catalogue is)
