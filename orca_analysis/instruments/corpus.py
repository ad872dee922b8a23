"""Text corpus for the training ablations: find it, tokenise it once, cache it, sample from it.

Default corpus: the Python standard library's own .py sources (every machine with Python has
them; no download), test folders and site-packages left out. A user corpus is a text file or
a folder of text files, given as a parameter or via the ORCA_CORPUS environment variable.
Tokenisers: `byte` (vocabulary 256, nothing to train) or `bpe` (a byte-level BPE trained
locally with Hugging Face `tokenizers` to the requested vocabulary). Token ids are cached on
disk, keyed by the corpus bytes' sha256 and the tokeniser, so a second run reads them back.
"""

from __future__ import annotations

import hashlib
import os
import platform
import sysconfig
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import numpy as np
import torch

from ..errors import OrcaError

TEXT_SUFFIXES = (".txt", ".md", ".py", ".rst", ".json", ".yaml", ".yml", ".csv", ".html", ".tex")
_SKIP_DIRS = {"site-packages", "dist-packages", "test", "tests", "idle_test", "__pycache__"}
VAL_EVERY = 10  # every 10th chunk of the token stream is validation data
CHUNK = 8192  # tokens per chunk: longer than any evaluation window at CPU scale


class CorpusError(OrcaError):
    """The corpus path is missing or holds no text."""


@dataclass(frozen=True)
class Corpus:
    name: str  # "python-stdlib-3.11.7" or the user's path
    files: tuple[Path, ...]
    n_bytes: int
    sha256: str  # of the concatenated bytes: the cache key


@dataclass(frozen=True)
class TokenData:
    corpus: Corpus
    tokenizer: str  # "byte" or "bpe-<vocab>"
    vocab: int
    train: torch.Tensor  # (n_train,) int64 token ids
    val: torch.Tensor  # (n_val,)

    def describe(self) -> str:
        return (
            f"corpus={self.corpus.name},sha256={self.corpus.sha256[:12]},bytes={self.corpus.n_bytes},"
            f"tokenizer={self.tokenizer},train_tokens={len(self.train)},val_tokens={len(self.val)}"
        )


def stdlib_files() -> list[Path]:
    root = Path(sysconfig.get_paths()["stdlib"])
    return sorted(f for f in root.rglob("*.py") if not _SKIP_DIRS & set(f.relative_to(root).parts[:-1]))


def _user_files(path: Path) -> list[Path]:
    if path.is_file():
        return [path]
    return sorted(f for f in path.rglob("*") if f.is_file() and f.suffix.lower() in TEXT_SUFFIXES)


def _read(files: list[Path]) -> bytes:
    return b"\n".join(f.read_bytes() for f in files)


def load_corpus(path: str | Path | None = None) -> Corpus:
    """The corpus at `path`, else at $ORCA_CORPUS, else the Python standard library's sources."""
    path = path or os.environ.get("ORCA_CORPUS") or None
    if path is None:
        files, name = stdlib_files(), _default_name()
    else:
        p = Path(path).expanduser()
        if not p.exists():
            raise CorpusError(f"corpus not found: {p}")
        files, name = _user_files(p), str(p)
        if not files:
            raise CorpusError(f"corpus has no text files ({', '.join(TEXT_SUFFIXES)}): {p}")
    data = _read(files)
    if not data.strip():
        raise CorpusError(f"corpus is empty: {name}")
    return Corpus(name, tuple(files), len(data), hashlib.sha256(data).hexdigest())


DEFAULT_LABEL = "python-stdlib"  # any machine's default corpus, whatever its Python version


def label_of(name: str, sha256: str) -> str:
    """What stored results are keyed by: the default corpus by name only (so results measured on another
    machine's stdlib match ours), a user corpus by path and content (an edited file is a new corpus)."""
    if name.startswith("python-stdlib"):
        return DEFAULT_LABEL
    return f"{name}@{sha256[:12]}"  # 12 hex digits: what TokenData.describe records, so imports agree


def _default_name() -> str:
    return f"python-stdlib-{platform.python_version()}"


def corpus_label(corpus: Corpus) -> str:
    if corpus.name == _default_name():
        return DEFAULT_LABEL
    return label_of(str(Path(corpus.name).resolve()), corpus.sha256)  # the same file however it was named


def selected_corpus_label(path: str | Path | None = None) -> str:
    """The label of the corpus `load_corpus(path)` would give; the default one without reading it."""
    if not (path or os.environ.get("ORCA_CORPUS")):
        return DEFAULT_LABEL
    return corpus_label(load_corpus(path))


def default_cache_dir() -> Path:
    return Path(os.environ.get("ORCA_CACHE_DIR") or Path.home() / ".cache" / "orca-analysis")


def _bpe_ids(data: bytes, vocab: int, cache_dir: Path, key: str) -> np.ndarray:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok_file = cache_dir / f"{key}.tokenizer.json"
    if tok_file.exists():
        tokenizer = Tokenizer.from_file(str(tok_file))
    else:
        tokenizer = Tokenizer(models.BPE())
        tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tokenizer.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(
            vocab_size=vocab, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False
        )
        lines = data.decode("utf-8", errors="replace").splitlines(keepends=True)
        tokenizer.train_from_iterator(lines, trainer=trainer)
        tokenizer.save(str(tok_file))
    text = data.decode("utf-8", errors="replace")
    # Encode in ~1 MB pieces split at newlines: one huge string is slow to pre-tokenise.
    pieces, start = [], 0
    while start < len(text):
        end = text.find("\n", start + 1_000_000)
        end = len(text) if end < 0 else end + 1
        pieces.append(text[start:end])
        start = end
    ids = [i for enc in tokenizer.encode_batch(pieces) for i in enc.ids]
    return np.asarray(ids, dtype=np.int32)


def _split(ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Interleaved split into chunks of about CHUNK tokens (at least VAL_EVERY of them): chunk k
    goes to validation when k % VAL_EVERY == VAL_EVERY - 1, so about a tenth of the text, from
    all over the corpus, is held out."""
    chunks = np.array_split(ids, max(len(ids) // CHUNK, VAL_EVERY))
    val = [c for k, c in enumerate(chunks) if k % VAL_EVERY == VAL_EVERY - 1]
    train = [c for k, c in enumerate(chunks) if k % VAL_EVERY != VAL_EVERY - 1]
    return np.concatenate(train), np.concatenate(val)


@cache
def _tokenized(corpus: Corpus, tokenizer: str, vocab: int, cache_dir: Path) -> TokenData:
    if tokenizer not in ("byte", "bpe"):
        raise ValueError(f"unknown tokenizer '{tokenizer}': use 'byte' or 'bpe'")
    label = "byte" if tokenizer == "byte" else f"bpe-{vocab}"
    key = f"{corpus.sha256[:16]}-{label}"
    cache_dir.mkdir(parents=True, exist_ok=True)
    ids_file = cache_dir / f"{key}.npy"
    if ids_file.exists():
        ids = np.load(ids_file)
    else:
        data = _read(list(corpus.files))
        if tokenizer == "byte":
            ids = np.frombuffer(data, dtype=np.uint8).astype(np.int32)
        else:
            ids = _bpe_ids(data, vocab, cache_dir, key)
        tmp = cache_dir / f"{key}.tmp.npy"
        np.save(tmp, ids)
        tmp.replace(ids_file)  # atomic: a concurrent run never reads half a file
    train, val = _split(ids)
    v = 256 if tokenizer == "byte" else vocab
    return TokenData(corpus, label, v, torch.from_numpy(train).long(), torch.from_numpy(val).long())


def tokenized(
    corpus: Corpus, tokenizer: str = "byte", vocab: int = 256, cache_dir: Path | None = None
) -> TokenData:
    """Token ids of the corpus (cached on disk and in memory), split into train and validation."""
    return _tokenized(corpus, tokenizer, vocab, Path(cache_dir or default_cache_dir()))


def sample_windows(tokens: torch.Tensor, batch: int, length: int, gen: torch.Generator) -> torch.Tensor:
    """(batch, length) random windows of the stream; the generator makes it repeatable."""
    starts = torch.randint(0, len(tokens) - length + 1, (batch,), generator=gen)
    return torch.stack([tokens[s : s + length] for s in starts.tolist()])


def fixed_windows(tokens: torch.Tensor, count: int, length: int) -> torch.Tensor:
    """(count, length) windows at evenly spaced offsets: the same evaluation set every time."""
    if len(tokens) < length:
        raise CorpusError(f"corpus split has {len(tokens)} tokens, fewer than one window of {length}")
    starts = np.linspace(0, len(tokens) - length, count).astype(np.int64)
    return torch.stack([tokens[s : s + length] for s in starts.tolist()])
