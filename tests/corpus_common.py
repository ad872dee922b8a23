"""A small text corpus the training tests share."""

from pathlib import Path

TEXT = "".join(f"def f{i}(x):\n    return x * {i} + {i % 7}\n\n" for i in range(400))  # ~14 kB


def _write_corpus(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "a.py").write_text(TEXT)
    (folder / "b.txt").write_text(TEXT.upper())
    (folder / "skip.bin").write_bytes(b"\x00\x01")
    return folder
