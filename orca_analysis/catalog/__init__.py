"""The catalogue layer: data about the data, at the bottom of the package. It imports nothing of the package
above it, and everything may import it. It holds the findings the report states and the remedy catalogue
names (findings.py)."""
