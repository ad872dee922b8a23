from pathlib import Path

import pytest

FIXTURES = Path(__file__).parent / "fixtures"


@pytest.fixture
def tiny_study_path() -> Path:
    return FIXTURES / "tiny.yaml"


@pytest.fixture
def write_study(tmp_path):
    """Write a study file from text; returns its path."""

    def write(text: str, name: str = "study.yaml") -> Path:
        path = tmp_path / name
        path.write_text(text)
        return path

    return write
