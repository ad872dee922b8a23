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


@pytest.fixture(scope="module")
def base_records():
    """The three measurements on the tiny base at seq_len 32 (CPU: kernels at 8, speed at 16 tokens)."""
    from speed_common import _run, _study

    study = _study()
    return study, {name: _run(name, study) for name in ("kernels", "attention_speed", "speed")}


@pytest.fixture
def corpus_dir(tmp_path):
    from corpus_common import _write_corpus

    return _write_corpus(tmp_path / "corpus")
