"""The synthetic demo reviews: Amazon review CSV layout, made by a small grammar.

The grammar makes the next word predictable from context a bigram model does not see: the category
picks the products, the star rating picks the title and the sentiment words, and later sentences
name again the product and the person of the first one ("... for my mother. The blender is great
and my mother loves it."). A GRU should beat a unigram model clearly and a bigram model too.
"""

from __future__ import annotations

import csv
import os
import random
import tempfile
from pathlib import Path

COLUMNS = (
    "review_id",
    "product_id",
    "product_category",
    "star_rating",
    "review_title",
    "review_body",
    "language",
)
# category → product → what it does (said in good reviews)
CATALOG: dict[str, dict[str, str]] = {
    "Kitchen": {
        "blender": "crushes ice in seconds",
        "toaster": "browns the bread evenly",
        "kettle": "boils water really fast",
        "skillet": "heats up evenly",
        "mixer": "whips cream in a minute",
    },
    "Electronics": {
        "headphones": "block out the noise on the train",
        "speaker": "fills the whole room with sound",
        "charger": "charges a phone in an hour",
        "keyboard": "types quietly and smoothly",
        "camera": "takes sharp pictures at night",
    },
    "Books": {
        "novel": "kept me reading until midnight",
        "cookbook": "has simple recipes for every night",
        "biography": "tells an honest story",
        "atlas": "has clear maps of every country",
        "journal": "has thick paper that does not bleed",
    },
    "Toys": {
        "puzzle": "keeps the kids busy for hours",
        "robot": "walks and talks like a real one",
        "doll": "has soft hair and pretty clothes",
        "kite": "flies high even in light wind",
        "train set": "runs around the track for hours",
    },
    "Beauty": {
        "shampoo": "leaves hair soft and shiny",
        "lotion": "keeps skin smooth all day",
        "perfume": "smells fresh and light",
        "hair dryer": "dries hair in five minutes",
        "brush": "gets through every knot",
    },
    "Sports": {
        "yoga mat": "does not slip during practice",
        "tent": "stays dry in heavy rain",
        "bike helmet": "fits snugly and feels safe",
        "water bottle": "keeps drinks cold all day",
        "backpack": "holds everything for a long hike",
    },
}
PEOPLE = ("mother", "father", "sister", "brother", "wife", "husband", "son", "daughter", "friend")
GIFT = ("for my {p}", "as a gift for my {p}", "as a birthday present for my {p}")
# rating → (titles, adjectives, how the person feels, verdict, price sentence)
MOOD: dict[int, tuple[tuple[str, ...], ...]] = {
    1: (
        ("One Star", "Terrible", "Do not buy"),
        ("terrible", "awful", "useless"),
        ("hates", "returned"),
        ("I would not recommend this {x} to anyone.", "Save your money."),
        ("It&#39;s a waste of money.", "It was not worth the price."),
    ),
    2: (
        ("Two Stars", "Disappointed", "Not great"),
        ("flimsy", "disappointing", "cheap"),
        ("rarely uses", "does not like"),
        ("I would not buy this {x} again.", "There are better options."),
        ("It's overpriced for what you get.", "It was not worth the price."),
    ),
    3: (
        ("Three Stars", "It's okay", "Average"),
        ("okay", "fine", "average"),
        ("sometimes uses", "does not mind"),
        ("It does the job but nothing more.", "I might buy this {x} again."),
        ("The price is fair.", "It's a fair deal for the price."),
    ),
    4: (
        ("Four Stars", "Very good", "Happy with it"),
        ("good", "solid", "nice"),
        ("likes", "enjoys"),
        ("I would recommend this {x} to a friend.", "Good value overall."),
        ("It's a good deal for the price.", "The price is reasonable."),
    ),
    5: (
        ("Five Stars", "Love it!", "Perfect"),
        ("great", "amazing", "perfect"),
        ("loves", "adores"),
        ("I would highly recommend this {x} to anyone!", "Best purchase this year!"),
        ("It's worth every penny.", "It was worth the price."),
    ),
}
RATING_WEIGHTS = (10, 7, 10, 20, 53)


def _body(rng: random.Random, product: str, does: str, rating: int) -> str:
    """Three to eight sentences that keep referring back to the same product and person."""
    _, adjectives, feels, verdicts, prices = MOOD[rating]
    person = rng.choice(PEOPLE)
    good = rating >= 4
    gift = rng.choice(GIFT).format(p=person)
    optional = [
        f"The {product} {does}." if good else f"The {product} stopped working after a week.",
        f"My {person} uses the {product} every {rng.choice(('day', 'week', 'morning'))}.",
        rng.choice(prices),
        f"Shipping was {rng.choice(('fast', 'quick', 'slow'))} and the box was {adjectives[0]}.",
        f"The {product} is {rng.choice(adjectives)} and it&#39;s easy to clean.",
        rng.choice(verdicts).format(x=product),
    ]
    rng.shuffle(optional)
    sentences = [
        f"I bought this {product} {gift}.",
        f"The {product} is {rng.choice(adjectives)} and my {person} {rng.choice(feels)} it.",
        *optional[: rng.randint(1, 6)],
    ]
    return "".join(s + rng.choice((" ", " ", "<br />")) for s in sentences).strip()


def write_sample_reviews(out: Path, rows: int = 4000, seed: int = 0) -> Path:
    """Write `rows` synthetic reviews to the CSV `out` (atomically); same seed, same bytes."""
    rng = random.Random(seed)
    letters = "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
    products = [
        (category, product, does, "B0" + "".join(rng.choices(letters, k=8)))
        for category, items in CATALOG.items()
        for product, does in items.items()
    ]
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=out.parent, prefix=f".{out.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", newline="", encoding="utf-8") as fh:
            writer = csv.writer(fh)
            writer.writerow(COLUMNS)
            for _ in range(rows):
                category, product, does, product_id = rng.choice(products)
                rating = rng.choices(range(1, 6), weights=RATING_WEIGHTS)[0]
                title = rng.choice(MOOD[rating][0])
                review_id = "R" + "".join(rng.choices(letters, k=13))
                body = _body(rng, product, does, rating)
                writer.writerow((review_id, product_id, category, rating, title, body, "en"))
        os.replace(tmp, out)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return out


def demo_dataset(directory: Path, rows: int = 4000) -> Path:
    """The demo reviews in `directory`, written on first use (seed 0)."""
    path = directory / f"reviews-{rows}.csv"
    return path if path.exists() else write_sample_reviews(path, rows=rows, seed=0)
