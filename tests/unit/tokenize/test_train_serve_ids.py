"""Training and serving give the same ids for the same text: both run one Tokenizer."""

from pathlib import Path

import polars as pl
import pytest

from tasks.config import TokenizerConfig
from tasks.records import SPLITS
from tasks.tokenize.dataset import tokenize_snapshot
from tasks.tokenize.tokenizer import UNK_ID, Tokenizer

TEXTS = {
    "ascii": "This blender is great, isn't it? Works well.",
    "accents": "Crème brûlée: très bon, naïve café — NFKC ﬁne",
    "cjk": "とても良い商品です!这个搅拌机很好",
    "html": "Great<br />blender &amp; <b>cheap</b> &lt;3 it&#39;s",
    "urls and numbers": "See https://example.com/x?y=1 or www.shop.de, 3.5 stars for 1,299 USD",
}


@pytest.mark.parametrize("placeholders", [False, True], ids=["plain", "placeholders"])
def test_training_and_serving_give_the_same_ids(tmp_path: Path, placeholders: bool) -> None:
    # Each text many times, so that every review lands in some split and every token in the
    # vocabulary; a few unknown words so that [UNK] is exercised too.
    reviews = [(f"R{i}-{j}", text) for i in range(40) for j, text in enumerate(TEXTS.values())]
    reviews += [("rare", "zebra " + TEXTS["ascii"])]
    pl.DataFrame(
        {
            "review_id": [review_id for review_id, _ in reviews],
            "text": [text for _, text in reviews],
            "rating": pl.Series([5] * len(reviews), dtype=pl.Int8),
            "language": ["en"] * len(reviews),
        }
    ).write_parquet(tmp_path / "snapshot.parquet")
    cfg = TokenizerConfig(
        min_count=2, url_placeholder=placeholders, number_placeholder=placeholders
    )
    data = tokenize_snapshot(tmp_path / "snapshot.parquet", cfg, tmp_path / "tokenized")
    trained_ids = {
        review_id: ids
        for split in SPLITS
        for review_id, ids in pl.read_parquet(data.split_path(split))
        .select("review_id", "ids")
        .iter_rows()
    }

    served = Tokenizer.load(data.vocab_path)  # what the served model loads from vocab.json
    texts = dict(reviews)
    served_ids = dict(
        zip(texts, (a.tolist() for a in served.encode(list(texts.values()))), strict=True)
    )

    assert trained_ids == served_ids
    assert UNK_ID in trained_ids["rare"]  # "zebra" is seen once: below min_count
    if placeholders:
        tokens = served.tokenize([TEXTS["urls and numbers"]])[0]
        assert tokens.count("[URL]") == 2 and tokens.count("[NUM]") == 2
