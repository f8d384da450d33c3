"""Caption text files and the original's ``captions.pickle``.

``captions.pickle`` is the list ``[train_captions, test_captions, ixtoword, wordtoix]``: the
captions as lists of word indices (no padding, no ``<end>``), image after image, a fixed number of
captions per image, and the vocabulary dicts (see :class:`~attngan_fast.data.vocab.Vocabulary`).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

from attngan_fast.data._io import as_str, dump_pickle, load_pickle
from attngan_fast.data.vocab import EncodedCaption, Vocabulary, tokenize
from attngan_fast.errors import FileFormatError

PICKLE_EXPECTS = (
    "captions.pickle must hold [train_captions, test_captions, ixtoword, wordtoix] "
    "(delete it to rebuild it from the caption text files)"
)


def _caption_lines(path: Path, expects: str) -> list[tuple[int, str]]:
    """(1-based line number, text) of the non-blank lines of a caption file."""
    if not path.is_file():
        state = "is not a file" if path.exists() else "not found"
        raise FileNotFoundError(f"{path}: {state}; {expects}")
    text = path.read_text(encoding="utf-8", errors="replace")
    return [(n, line) for n, line in enumerate(text.splitlines(), 1) if line.strip()]


def read_caption_file(path: Path, limit: int | None = None, *, expects: str) -> list[list[str]]:
    """Tokenized captions of a text file, one caption a line; blank lines are skipped.

    Args:
        path: the caption file.
        limit: read at most this many captions (the original keeps the first CAPTIONS_PER_IMAGE).
        expects: what the dataset layout expects at ``path``, for the error message.

    Raises:
        FileNotFoundError: ``path`` is missing (the message names it and ``expects``).
        ValueError: a line has no ASCII word (the message is ``path:line``).
    """
    captions = []
    for n, line in _caption_lines(path, expects):
        if limit is not None and len(captions) == limit:
            break
        tokens = tokenize(line)
        if not tokens:
            raise ValueError(f"{path}:{n}: caption {line.strip()!r} has no ASCII word")
        captions.append(tokens)
    return captions


class CaptionLine(NamedTuple):
    """One caption of a user's caption file, encoded with a trained model's vocabulary."""

    line: int  # 1-based line number in the file
    text: str
    ids: list[int]
    unknown: list[str]  # words the vocabulary does not know, left out of ``ids``


def encode_caption_file(path: Path, vocab: Vocabulary) -> list[CaptionLine]:
    """Encode every non-blank line of ``path`` (e.g. captions to generate images from).

    Unknown words are returned per line so the caller can report them.

    Raises:
        FileNotFoundError: ``path`` is missing.
        ValueError: a line has no word the vocabulary knows (the message is ``path:line``).
    """
    path = Path(path)
    out = []
    for n, line in _caption_lines(path, "expected a text file with one caption a line"):
        enc: EncodedCaption = vocab.encode(line)
        if not enc.ids:
            detail = f"unknown words {enc.unknown}" if enc.unknown else "no ASCII word"
            raise ValueError(f"{path}:{n}: caption {line.strip()!r} has no known word ({detail})")
        out.append(CaptionLine(n, line.strip(), enc.ids, enc.unknown))
    return out


class CaptionSets(NamedTuple):
    """The content of captions.pickle: train and test captions (index lists) and vocabulary."""

    train: list[list[int]]
    test: list[list[int]]
    vocab: Vocabulary

    def split(self, name: str) -> list[list[int]]:
        """The captions of split ``'train'`` or ``'test'``."""
        return self.train if name == "train" else self.test


def build_caption_sets(
    train: Sequence[Sequence[str]], test: Sequence[Sequence[str]]
) -> CaptionSets:
    """Index tokenized captions with a vocabulary of all their words (train first, then test)."""
    vocab = Vocabulary.build([*train, *test])
    return CaptionSets(
        [vocab.encode_tokens(c).ids for c in train],
        [vocab.encode_tokens(c).ids for c in test],
        vocab,
    )


def save_captions_pickle(path: Path, sets: CaptionSets) -> None:
    """Write ``[train, test, ixtoword, wordtoix]`` with pickle protocol 2, as the original does."""
    dump_pickle(path, [sets.train, sets.test, sets.vocab.ixtoword, sets.vocab.wordtoix])


def load_captions_pickle(path: Path) -> CaptionSets:
    """Read a captions.pickle written by the original (Python 2) or by this package."""
    data = load_pickle(path, PICKLE_EXPECTS)
    if not isinstance(data, (list, tuple)) or len(data) < 4:
        raise FileFormatError(f"{path}: unexpected content; {PICKLE_EXPECTS}")
    train, test, ixtoword, wordtoix = data[:4]
    try:
        vocab = Vocabulary(
            {int(i): as_str(w) for i, w in ixtoword.items()},
            {as_str(w): int(i) for w, i in wordtoix.items()},
        )
        train = [[int(i) for i in c] for c in train]
        test = [[int(i) for i in c] for c in test]
    except (AttributeError, TypeError, ValueError, OverflowError) as exc:
        raise FileFormatError(f"{path}: {exc}; {PICKLE_EXPECTS}") from None
    ids = [i for caption in (*train, *test) for i in caption]
    if ids and not 0 <= min(ids) <= max(ids) < len(vocab):
        raise FileFormatError(
            f"{path}: word indices {min(ids)} … {max(ids)} outside the vocabulary of "
            f"{len(vocab)} words; {PICKLE_EXPECTS}"
        )
    return CaptionSets(train, test, vocab)
