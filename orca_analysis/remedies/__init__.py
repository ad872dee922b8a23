"""Remedies: fixes for the findings, each measured as a variant (schema.py), and the recommended
design made of those that pass (recommend.py)."""
