"""User-facing errors: each renders as one line per problem, never a traceback."""

from __future__ import annotations


class OrcaError(Exception):
    """A problem the user can fix. `problems` holds one line each."""

    def __init__(self, problems: str | list[str]):
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        super().__init__("; ".join(self.problems))


class StudyError(OrcaError):
    """The study file (or a --set override) is missing, malformed or impossible."""


class BuildError(OrcaError):
    """x-transformers (or our realisation of a flag) refused a variant."""
