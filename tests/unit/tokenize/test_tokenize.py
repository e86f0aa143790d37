import hashlib
import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from tasks.config import TokenizerConfig
from tasks.tokenize.dataset import splits_of, tokenize_snapshot
from tasks.tokenize.tokenizer import UNK_ID, Tokenizer, Vocab


def normalize(text: str, lowercase: bool = True) -> str:
    return Tokenizer(lowercase).normalize([text])[0]


def tokenize_text(text: str, lowercase: bool = True) -> list[str]:
    return Tokenizer(lowercase).tokenize([text])[0]


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("Great<br />blender<br/>ok", "great blender ok"),
        ("<p>Hi</p>  <b>there</b>", "hi there"),
        ("It&#39;s fine &amp; cheap &lt;3", "it's fine & cheap <3"),
        ("&quot;x&quot; &#039;y&#039; &apos;z&apos;a&nbsp;b", "\"x\" 'y' 'z'a b"),
        ("&amp;lt;", "&lt;"),
        ("\uff46\uff55\uff4c\uff4c \u2460", "full 1"),  # fullwidth, circled digit
        ("Don\u2019t  \t\n STOP", "don't stop"),
        ("a < b > c", "a < b > c"),
    ],
)
def test_normalize(raw: str, expected: str) -> None:
    assert normalize(raw) == expected


def test_normalize_keeps_case_when_asked() -> None:
    assert normalize("Hello <br />WORLD", lowercase=False) == "Hello WORLD"
    assert tokenize_text("Hello WORLD", lowercase=False) == ["Hello", "WORLD"]


def test_tokens() -> None:
    assert tokenize_text("It's great, isn't it?! 'quoted'") == [
        "it's", "great", ",", "isn't", "it", "?", "!", "'", "quoted", "'",
    ]  # fmt: skip
    assert tokenize_text("Café naïve 3.5kg") == ["café", "naïve", "3", ".", "5kg"]
    assert tokenize_text("とても良い商品です!") == [
        "と",
        "て",
        "も",
        "良",
        "い",
        "商",
        "品",
        "で",
        "す",
        "!",
    ]
    assert tokenize_text("abc漢字") == ["abc", "漢", "字"]
    assert tokenize_text("   ") == []
    assert Tokenizer().tokenize(["A b", "C."]) == [["a", "b"], ["c", "."]]


def test_split_is_stable_and_balanced() -> None:
    ids = [f"R{i:07d}" for i in range(5000)]
    splits = splits_of(pl.Series(ids), 0.1, 0.1).cast(pl.String).to_list()
    # the documented rule: the first 8 bytes of sha1(id) as a fraction of 2**64
    u = int.from_bytes(hashlib.sha1(ids[0].encode()).digest()[:8], "big") / 2.0**64
    assert splits[0] == ("test" if u < 0.1 else "val" if u < 0.2 else "train")
    shares = pl.Series(splits).value_counts(normalize=True)
    share = dict(zip(shares[:, 0], shares[:, 1], strict=True))
    assert share["train"] == pytest.approx(0.8, abs=0.03)
    assert share["val"] == pytest.approx(0.1, abs=0.02)
    assert share["test"] == pytest.approx(0.1, abs=0.02)
    # more data (shuffled in) moves no old review
    grown = [f"X{i}" for i in range(3000)] + ids[::-1]
    moved = dict(zip(grown, splits_of(pl.Series(grown), 0.1, 0.1).cast(pl.String), strict=True))
    assert all(moved[i] == s for i, s in zip(ids, splits, strict=True))


def test_vocab_ties_by_token_and_round_trip(tmp_path: Path) -> None:
    tokens = pl.Series([["b", "a", "c", "c"], ["d", "b", "a"]])
    vocab = Vocab.build(tokens, size=5, lowercase=True)
    assert vocab.tokens == ["[PAD]", "[UNK]", "a", "b", "c"]  # a, b, c all twice: by token
    assert vocab.counts == [0, 1, 2, 2, 2]  # "d" is the one unknown
    assert len(vocab) == 5
    assert vocab.token(2) == "a"
    np.testing.assert_array_equal(vocab.encode(["c", "zz", "a"]), np.array([4, 1, 2], np.int32))
    assert vocab.encode(["a"]).dtype == np.int32
    vocab.save(tmp_path / "vocab.json")
    loaded = Vocab.load(tmp_path / "vocab.json")
    assert (loaded.tokens, loaded.counts, loaded.lowercase) == (
        vocab.tokens, vocab.counts, vocab.lowercase,
    )  # fmt: skip
    assert json.loads((tmp_path / "vocab.json").read_text())["tokens"][:2] == ["[PAD]", "[UNK]"]


def test_encode_normalizes_like_training() -> None:
    vocab = Vocab(["[PAD]", "[UNK]", "it's", "great", "."], [0, 0, 3, 2, 1], lowercase=True)
    out = Tokenizer.of(vocab).encode(["It&#39;s GREAT.", "nope"])
    assert [a.tolist() for a in out] == [[2, 3, 4], [UNK_ID]]
    assert out[0].dtype == np.int32


def _snapshot(path: Path, n: int = 600) -> Path:
    words = ["alpha", "beta", "gamma", "delta"]
    texts = [f"{words[i % 4]} {words[(i * 7) % 4]} w{i % 50}.<br />Ok!" for i in range(n)]
    pl.DataFrame(
        {
            "review_id": [f"R{i}" for i in range(n)],
            "text": texts,
            "rating": pl.Series([i % 5 + 1 for i in range(n)], dtype=pl.Int8),
            "language": ["en"] * n,
        }
    ).write_parquet(path)
    return path


def test_tokenize_snapshot(tmp_path: Path) -> None:
    snap = _snapshot(tmp_path / "snapshot.parquet")
    cfg = TokenizerConfig(vocab_size=40)
    a = tokenize_snapshot(snap, cfg, tmp_path / "a")
    vocab_a = (tmp_path / "a" / "vocab.json").read_bytes()
    b = tokenize_snapshot(snap, cfg, tmp_path / "b")
    assert (tmp_path / "b" / "vocab.json").read_bytes() == vocab_a
    assert a.digest == b.digest
    assert sum(a.reviews.values()) == 600
    assert a.vocab_size == len(Vocab.load(a.vocab_path)) <= 40
    for split in ("train", "val", "test"):
        frame = pl.read_parquet(a.split_path(split))
        assert frame.schema["ids"] == pl.List(pl.Int32)
        assert ("text" in frame.columns) == (split == "test")
        assert frame.height == a.reviews[split]
        assert frame["ids"].list.len().sum() == a.tokens[split]
        assert frame.equals(pl.read_parquet(b.split_path(split)))
        oov = (frame["ids"].explode() == UNK_ID).mean()
        assert a.oov_rate[split] == pytest.approx(oov)
    manifest = json.loads((tmp_path / "a" / "manifest.json").read_text())
    assert manifest["digest"] == a.digest
    assert set(manifest["files"]) == {"vocab.json", "train.parquet", "val.parquet", "test.parquet"}
    # overwrite in place: same result, no leftovers beside it
    again = tokenize_snapshot(snap, cfg, tmp_path / "a")
    assert again.digest == a.digest
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "b", "snapshot.parquet"]


def test_vocab_from_train_only(tmp_path: Path) -> None:
    cfg = TokenizerConfig(val_fraction=0.1, test_fraction=0.1)
    ids = [f"R{i}" for i in range(200)]
    test_id = ids[splits_of(pl.Series(ids), 0.1, 0.1).cast(pl.String).to_list().index("test")]
    texts = ["common words here." if i != test_id else "zebra only here." for i in ids]
    pl.DataFrame(
        {"review_id": ids, "text": texts, "rating": [None] * 200, "language": [None] * 200},
        schema={
            "review_id": pl.String,
            "text": pl.String,
            "rating": pl.Int8,
            "language": pl.String,
        },
    ).write_parquet(tmp_path / "s.parquet")
    data = tokenize_snapshot(tmp_path / "s.parquet", cfg, tmp_path / "out")
    vocab = Vocab.load(data.vocab_path)
    assert "zebra" not in vocab.tokens
    test = pl.read_parquet(data.split_path("test")).filter(pl.col("review_id") == test_id)
    assert test["ids"].item().to_list()[0] == UNK_ID
    assert test["text"].item() == "zebra only here."
    assert data.oov_rate["train"] == 0.0 and data.oov_rate["test"] > 0.0


def test_refuses_to_replace_a_foreign_directory(tmp_path: Path) -> None:
    snap = _snapshot(tmp_path / "snapshot.parquet", n=50)
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "precious.txt").write_text("keep me")
    with pytest.raises(FileExistsError):
        tokenize_snapshot(snap, TokenizerConfig(), tmp_path / "out")
    assert (tmp_path / "out" / "precious.txt").exists()


def test_shards_give_the_same_files_and_exact_stats(tmp_path: Path) -> None:
    """Many row groups (shards) or one: the same vocabulary and ids; stats counted exactly."""
    snap = _snapshot(tmp_path / "one.parquet", n=900)
    frame = pl.read_parquet(snap).with_columns(
        pl.Series(["en", "de", None] * 300).alias("language")
    )
    frame.write_parquet(tmp_path / "one.parquet")
    frame.write_parquet(tmp_path / "many.parquet", row_group_size=64)
    cfg = TokenizerConfig(vocab_size=30, min_count=2)
    one = tokenize_snapshot(tmp_path / "one.parquet", cfg, tmp_path / "a")
    many = tokenize_snapshot(tmp_path / "many.parquet", cfg, tmp_path / "b")
    assert one.vocab_path.read_bytes() == many.vocab_path.read_bytes()
    for split in ("train", "val", "test"):
        assert pl.read_parquet(one.split_path(split)).equals(
            pl.read_parquet(many.split_path(split))
        )
    assert many.languages == {"de": 300, "en": 300, "unknown": 300}
    for split in ("train", "val", "test"):
        lengths = pl.read_parquet(many.split_path(split))["ids"].list.len().to_numpy()
        expected = {
            f"p{p}": int(np.quantile(lengths, p / 100, method="inverted_cdf")) for p in (50, 90, 99)
        }
        assert many.length_percentiles[split] == expected == one.length_percentiles[split]
    counts = json.loads(many.vocab_path.read_text())["counts"]
    assert min(counts[2:]) >= 2  # --min-count: rarer tokens are [UNK]
