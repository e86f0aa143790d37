"""Text → tokens → ids: the one normalization and tokenizer, run at training and at serving.

`tokenization.py` builds the training data with these functions and the registered model
(`next_word_model.py`) runs the very same ones on raw text: train/serve skew is a bug class. This
module imports only polars and numpy so that the served model needs nothing else from reviewgru.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import polars as pl

from tasks.records import HTML_TAG

PAD, UNK = "[PAD]", "[UNK]"
PAD_ID, UNK_ID = 0, 1

# Unescaped in one pass (replace_many), so "&amp;lt;" becomes the text "&lt;", as in HTML.
_ENTITIES = {
    "&amp;": "&",
    "&lt;": "<",
    "&gt;": ">",
    "&quot;": '"',
    "&#34;": '"',
    "&#39;": "'",
    "&#039;": "'",
    "&#x27;": "'",
    "&apos;": "'",
    "&nbsp;": " ",
    "&#160;": " ",
}
_CJK = r"\p{Han}\p{Hiragana}\p{Katakana}"
_WORD_CHAR = rf"[[\p{{L}}\p{{N}}\p{{M}}]--[{_CJK}]]"
URL_TOKEN, NUM_TOKEN = "[URL]", "[NUM]"
_URL = r"(?i)\b(?:https?://|www\.)[^\s<>\"]*[^\s<>\".,!?;:)\]']"
_NUMBER = r"\b\p{Nd}+(?:[.,]\p{Nd}+)*\b"
# A placeholder; a CJK character alone; a word with inner apostrophes ("it's"); any other
# visible character alone.
token_pattern = rf"\[(?:URL|NUM)\]|[{_CJK}]|{_WORD_CHAR}+(?:'{_WORD_CHAR}+)*|\S"


def _markup(text: pl.Expr) -> pl.Expr:
    return text.str.replace_all(HTML_TAG, " ").str.replace_many(_ENTITIES)


def _unicode(text: pl.Expr) -> pl.Expr:
    """NFKC and curly apostrophes: no-ops on ASCII text."""
    return text.str.normalize("NFKC").str.replace_all("[\u2018\u2019\u02bc]", "'")


def _case_and_placeholders(text: pl.Expr, lowercase: bool, urls: bool, numbers: bool) -> pl.Expr:
    out = text.str.to_lowercase() if lowercase else text
    if urls:
        out = out.str.replace_all(_URL, f" {URL_TOKEN} ")
    if numbers:
        out = out.str.replace_all(_NUMBER, f" {NUM_TOKEN} ")
    return out


def _clean(text: pl.Expr, lowercase: bool, urls: bool, numbers: bool) -> pl.Expr:
    """Everything of the normalization but the whitespace, in this order."""
    return _case_and_placeholders(_unicode(_markup(text)), lowercase, urls, numbers)


def normalize_expr(
    text: pl.Expr, lowercase: bool = True, urls: bool = False, numbers: bool = False
) -> pl.Expr:
    """HTML tags → space, entities unescaped, NFKC, curly apostrophe → ', lowercase, one space;
    optionally URLs → [URL] and numbers → [NUM]."""
    cleaned = _clean(text, lowercase, urls, numbers)
    return cleaned.str.replace_all(r"\s+", " ").str.strip_chars()


def tokens_expr(
    text: pl.Expr, lowercase: bool = True, urls: bool = False, numbers: bool = False
) -> pl.Expr:
    """Normalized text → list[str] of tokens (whitespace never matters to the tokens, so it is
    not collapsed first)."""
    return _clean(text, lowercase, urls, numbers).str.extract_all(token_pattern)


def tokens_series(
    texts: pl.Series, lowercase: bool = True, urls: bool = False, numbers: bool = False
) -> pl.Series:
    """`tokens_expr` on a Series, the Unicode steps run only on the non-ASCII texts (on ASCII
    they change nothing): the same tokens, faster. For batch tokenization."""
    cleaned = texts.alias("t").to_frame().select(_markup(pl.col("t"))).to_series()
    non_ascii = (cleaned.str.len_bytes() != cleaned.str.len_chars()).arg_true()
    if non_ascii.len():
        fixed = cleaned.gather(non_ascii).to_frame().select(_unicode(pl.col("t"))).to_series()
        cleaned = cleaned.scatter(non_ascii, fixed)
    rest = _case_and_placeholders(pl.col("t"), lowercase, urls, numbers)
    return (
        cleaned.to_frame().select(rest.str.extract_all(token_pattern)).to_series().alias(texts.name)
    )


def tokenize_texts(
    texts: Sequence[str], lowercase: bool = True, urls: bool = False, numbers: bool = False
) -> list[list[str]]:
    frame = pl.DataFrame({"text": list(texts)}, schema={"text": pl.String})
    return frame.select(tokens_expr(pl.col("text"), lowercase, urls, numbers))["text"].to_list()


def tokenize_text(
    text: str, lowercase: bool = True, urls: bool = False, numbers: bool = False
) -> list[str]:
    return tokenize_texts([text], lowercase, urls, numbers)[0]


def write_bytes_atomically(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class Vocab:
    """Ids 0 = [PAD], 1 = [UNK], then train tokens by count (desc), ties by token (asc)."""

    def __init__(
        self,
        tokens: list[str],
        counts: list[int],
        lowercase: bool,
        urls: bool = False,
        numbers: bool = False,
    ) -> None:
        if tokens[:2] != [PAD, UNK] or len(tokens) != len(counts):
            raise ValueError("a vocabulary starts with [PAD], [UNK] and has one count per token")
        self.tokens = tokens
        self.counts = counts
        self.lowercase = lowercase
        self.urls = urls  # the normalization it was built with: URL / number placeholders
        self.numbers = numbers
        self._ids = {token: i for i, token in enumerate(tokens)}

    @classmethod
    def build(
        cls, tokens: pl.Series, size: int, lowercase: bool, min_count: int = 1, **flags: bool
    ) -> Vocab:
        """From a list[str] Series of the TRAIN split; keeps the `size - 2` most frequent tokens."""
        counts = tokens.explode().drop_nulls().to_frame("token").group_by("token").len("count")
        return cls.from_counts(counts, size, lowercase, min_count, **flags)

    @classmethod
    def from_counts(
        cls, counts: pl.DataFrame, size: int, lowercase: bool, min_count: int = 1, **flags: bool
    ) -> Vocab:
        """From a frame of token, count: the `size - 2` most frequent tokens seen at least
        `min_count` times, ties by token; the others' count goes to [UNK]."""
        counts = counts.sort(["count", "token"], descending=[True, False])
        kept = counts.filter(pl.col("count") >= min_count).head(size - 2)
        unk = int(counts["count"].sum()) - int(kept["count"].sum())
        return cls(
            [PAD, UNK, *kept["token"].to_list()],
            [0, unk, *kept["count"].to_list()],
            lowercase,
            **flags,
        )

    def save(self, path: Path) -> None:
        """Write vocab.json atomically (same vocabulary → same bytes)."""
        doc: dict[str, object] = {
            "tokens": self.tokens,
            "counts": self.counts,
            "lowercase": self.lowercase,
        }
        if self.urls or self.numbers:
            doc |= {"urls": self.urls, "numbers": self.numbers}
        write_bytes_atomically(path, json.dumps(doc, ensure_ascii=False).encode())

    @classmethod
    def load(cls, path: Path) -> Vocab:
        doc = json.loads(path.read_text(encoding="utf-8"))
        return cls(
            doc["tokens"],
            doc["counts"],
            doc["lowercase"],
            doc.get("urls", False),
            doc.get("numbers", False),
        )

    def __len__(self) -> int:
        return len(self.tokens)

    def token(self, id_: int) -> str:
        return self.tokens[id_]

    def encode(self, tokens: Sequence[str]) -> np.ndarray:
        return np.array([self._ids.get(t, UNK_ID) for t in tokens], dtype=np.int32)

    def ids_expr(self, tokens: pl.Expr) -> pl.Expr:
        """list[str] → list[int32] of ids, unknown tokens → 1."""
        return tokens.list.eval(
            pl.element().replace_strict(
                self.tokens[2:],
                list(range(2, len(self.tokens))),
                default=UNK_ID,
                return_dtype=pl.Int32,
            )
        )


def encode_texts(texts: Sequence[str], vocab: Vocab) -> list[np.ndarray]:
    """Raw texts → id arrays, with the normalization the vocabulary was built with.

    Tokens come from the polars expression; ids from the vocabulary's dict, which for the few
    texts of a request is ~4× faster than `ids_expr` (its 10 000-entry mapping is rebuilt per call).
    """
    tokens = tokenize_texts(texts, vocab.lowercase, vocab.urls, vocab.numbers)
    return [vocab.encode(t) for t in tokens]
