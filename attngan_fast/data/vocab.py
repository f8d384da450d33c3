"""Tokenizer and vocabulary, as the original AttnGAN builds them.

Tokens are the matches of the regex ``\\w+`` in the lower-cased caption, with non-ASCII characters
removed from each token (a token left empty is dropped). Index 0 is ``<end>``, the padding token.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from typing import NamedTuple

END_TOKEN = "<end>"
_WORD = re.compile(r"\w+")


def tokenize(text: str) -> list[str]:
    """Split a caption into lower-case ASCII word tokens.

    >>> tokenize("A small bird, with a RED crown — très joli!")
    ['a', 'small', 'bird', 'with', 'a', 'red', 'crown', 'trs', 'joli']
    """
    # The original first turns the CUB text's doubled replacement characters into a space.
    text = text.replace("\ufffd\ufffd", " ").lower()
    tokens = (t.encode("ascii", "ignore").decode("ascii") for t in _WORD.findall(text))
    return [t for t in tokens if t]


class EncodedCaption(NamedTuple):
    """A caption as word indices, and the words the vocabulary does not know (in caption order)."""

    ids: list[int]
    unknown: list[str]


class Vocabulary:
    """Word ↔ index maps, ``ixtoword[0] == '<end>'``: the dicts of the original's captions.pickle.

    Args:
        ixtoword: index → word, indices 0 … n-1 with 0 the ``<end>`` token.
        wordtoix: word → index, the inverse of ``ixtoword``; derived when omitted.
    """

    def __init__(self, ixtoword: Mapping[int, str], wordtoix: Mapping[str, int] | None = None):
        if ixtoword.get(0) != END_TOKEN:
            raise ValueError(f"vocabulary index 0 must be {END_TOKEN!r}, got {ixtoword.get(0)!r}")
        if sorted(ixtoword) != list(range(len(ixtoword))):
            raise ValueError("vocabulary indices must be 0 … n-1 without gaps")
        self.ixtoword: dict[int, str] = dict(ixtoword)
        self.wordtoix: dict[str, int] = {w: i for i, w in self.ixtoword.items()}
        if wordtoix is not None and dict(wordtoix) != self.wordtoix:
            raise ValueError("wordtoix is not the inverse of ixtoword")

    @classmethod
    def build(cls, captions: Iterable[Sequence[str]]) -> Vocabulary:
        """Every word of the tokenized ``captions``, indexed in order of first appearance.

        (The original indexes all words too, in Python 2 dict order, which is not reproducible.)
        """
        ixtoword = {0: END_TOKEN}
        seen = {END_TOKEN}
        for caption in captions:
            for word in caption:
                if word not in seen:
                    seen.add(word)
                    ixtoword[len(ixtoword)] = word
        return cls(ixtoword)

    def __len__(self) -> int:
        return len(self.ixtoword)

    def __contains__(self, word: object) -> bool:
        return word in self.wordtoix

    def encode_tokens(self, tokens: Sequence[str]) -> EncodedCaption:
        """Indices of the known tokens, and the unknown ones (which the original silently drops)."""
        ids, unknown = [], []
        for t in tokens:
            ix = self.wordtoix.get(t)
            if ix is None or ix == 0:
                unknown.append(t)
            else:
                ids.append(ix)
        return EncodedCaption(ids, unknown)

    def encode(self, text: str) -> EncodedCaption:
        """Tokenize and encode a caption."""
        return self.encode_tokens(tokenize(text))

    def decode(self, ids: Iterable[int]) -> str:
        """The words of ``ids`` joined by spaces, padding (index 0) left out."""
        return " ".join(self.ixtoword[int(i)] for i in ids if int(i) != 0)
