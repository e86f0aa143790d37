"""Text → tokens → ids: the `Tokenizer`, run at training and at serving, and its `Vocab`.

`dataset.py` builds the training data with a Tokenizer and the registered model
(`tasks/serve/next_word_model.py`) runs the same object, loaded from vocab.json, on raw text:
train/serve skew is a bug class. The module imports only polars and numpy (and the tag pattern
from records.py) so that the served model needs little else from reviewgru.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import polars as pl

from tasks.files import write_bytes_atomically
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


def _normalized(text: pl.Expr, lowercase: bool, urls: bool, numbers: bool) -> pl.Expr:
    """HTML tags → space, entities unescaped, NFKC, curly apostrophe → ', lowercase, one space;
    optionally URLs → [URL] and numbers → [NUM]."""
    cleaned = _clean(text, lowercase, urls, numbers)
    return cleaned.str.replace_all(r"\s+", " ").str.strip_chars()


def _tokens_series(texts: pl.Series, lowercase: bool, urls: bool, numbers: bool) -> pl.Series:
    """Texts → list[str] of tokens, the Unicode steps run only on the non-ASCII texts (on ASCII
    they change nothing): the same tokens as on every text, faster. Whitespace never matters to
    the tokens, so it is not collapsed first."""
    cleaned = texts.alias("t").to_frame().select(_markup(pl.col("t"))).to_series()
    non_ascii = (cleaned.str.len_bytes() != cleaned.str.len_chars()).arg_true()
    if non_ascii.len():
        fixed = cleaned.gather(non_ascii).to_frame().select(_unicode(pl.col("t"))).to_series()
        cleaned = cleaned.scatter(non_ascii, fixed)
    rest = _case_and_placeholders(pl.col("t"), lowercase, urls, numbers)
    return (
        cleaned.to_frame().select(rest.str.extract_all(token_pattern)).to_series().alias(texts.name)
    )


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


class Tokenizer:
    """Text → tokens → ids: the one tokenizer, used to build the training data and by the served
    model. Its settings travel in vocab.json, so a model tokenizes as its data was tokenized."""

    def __init__(
        self,
        lowercase: bool = True,
        urls: bool = False,
        numbers: bool = False,
        vocab: Vocab | None = None,
    ) -> None:
        self.lowercase, self.urls, self.numbers = lowercase, urls, numbers
        self._vocab = vocab

    @classmethod
    def of(cls, vocab: Vocab) -> Tokenizer:
        """The tokenizer a vocabulary was built with, mapping to its ids."""
        return cls(vocab.lowercase, vocab.urls, vocab.numbers, vocab)

    @classmethod
    def load(cls, vocab_path: Path) -> Tokenizer:
        return cls.of(Vocab.load(vocab_path))

    @property
    def vocab(self) -> Vocab:
        if self._vocab is None:
            raise ValueError("this tokenizer has no vocabulary yet: build one from its tokens")
        return self._vocab

    def build_vocab(self, counts: pl.DataFrame, size: int, min_count: int = 1) -> Vocab:
        """The vocabulary of a frame of token, count, recording this tokenizer's settings."""
        return Vocab.from_counts(
            counts, size, self.lowercase, min_count, urls=self.urls, numbers=self.numbers
        )

    def normalize(self, texts: Sequence[str]) -> list[str]:
        """The texts as the tokenizer sees them (for display and tests)."""
        frame = pl.DataFrame({"t": list(texts)}, schema={"t": pl.String})
        expr = _normalized(pl.col("t"), self.lowercase, self.urls, self.numbers)
        return frame.select(expr).to_series().to_list()

    def tokens_series(self, texts: pl.Series) -> pl.Series:
        """A String Series → a list[str] Series of tokens (the batch path)."""
        return _tokens_series(texts, self.lowercase, self.urls, self.numbers)

    def tokenize(self, texts: Sequence[str]) -> list[list[str]]:
        return self.tokens_series(pl.Series("t", list(texts), dtype=pl.String)).to_list()

    def ids_expr(self, tokens: pl.Expr) -> pl.Expr:
        """list[str] → list[int32] of ids, unknown tokens → 1 (the batch path)."""
        return self.vocab.ids_expr(tokens)

    def encode(self, texts: Sequence[str]) -> list[np.ndarray]:
        """Raw texts → id arrays. Ids come from the vocabulary's dict, which for the few texts of
        a request beats `ids_expr` (its mapping is rebuilt per call; see README, Benchmarks)."""
        return [self.vocab.encode(tokens) for tokens in self.tokenize(texts)]
