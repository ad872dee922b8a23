"""The package's version (pyproject.toml's), for a provenance where no installed metadata says it."""

VERSION = "0.1.0"
