"""Remedies: fixes for the findings, each measured as a variant (its catalogue's schema: study/remedies.py),
and the recommended design made of those that pass (recommend.py)."""
