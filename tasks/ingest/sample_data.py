"""The synthetic demo reviews: Amazon review CSV layout, with statistics closer to real reviews.

Real review text has a Zipfian vocabulary of thousands of words, loose word order, typos and
lengths from one line to pages; a small grammar has none of that, and made a GRU look 36× better
than a unigram and 2× better than a bigram (real reviews: about 4× and 0.67-0.75×). Here:

- a vocabulary of a few thousand made-up words (fixed, built from syllables), drawn with Zipfian
  frequencies, most of them rare, so many test words are seen a few times or never;
- most sentences free: a chain over word classes (determiner, noun, verb, ...), each content
  word usually one of the few collocates of the word before it, as in "customer service";
- the rest set phrases whose parts come in either order, with optional words;
- the category picks its own Zipfian pool of product nouns, and the star rating the sentiment
  words: context a bigram does not see, and the product named again in later sentences;
- typos and dropped words, and a geometric number of sentences per review: most short, a few long.

It is still synthetic: it shows the pipeline end to end and the model beating the baselines by
margins of the order measured on real text, not what a model of real reviews would say.
"""

from __future__ import annotations

import csv
import itertools
import random
from pathlib import Path

from tasks.files import atomic_path

COLUMNS = (
    "review_id",
    "product_id",
    "product_category",
    "star_rating",
    "review_title",
    "review_body",
    "language",
)
CATEGORIES = ("Kitchen", "Electronics", "Books", "Toys", "Beauty", "Sports", "Garden", "Pets")
RATING_WEIGHTS = (10, 7, 10, 20, 53)
PEOPLE = ("mother", "father", "sister", "brother", "wife", "husband", "son", "daughter", "friend")
TIMES = ("day", "week", "morning", "night", "month", "weekend", "year")
INTENSIFIERS = ("very", "really", "so", "pretty", "quite", "super", "too", "not")
# Per rating: title words and a verdict; the sentiment adjectives come from the lexicon.
TITLES = {
    1: ("one star", "terrible", "do not buy", "waste of money"),
    2: ("two stars", "disappointed", "not great", "meh"),
    3: ("three stars", "it's okay", "average", "mixed feelings"),
    4: ("four stars", "very good", "happy with it", "nice"),
    5: ("five stars", "love it!", "perfect", "excellent"),
}
VERDICTS = {
    1: ("i would not recommend it to anyone", "save your money", "returned it"),
    2: ("i would not buy it again", "there are better options", "not worth it"),
    3: ("it does the job", "i might buy it again", "it's fine for the price"),
    4: ("i would recommend it", "good value overall", "would buy again"),
    5: ("i highly recommend it", "best purchase this year", "worth every penny"),
}
_ONSETS = [
    "b",
    "br",
    "c",
    "ch",
    "cr",
    "d",
    "dr",
    "f",
    "fl",
    "g",
    "gr",
    "h",
    "j",
    "k",
    "l",
    "m",
    "n",
    "p",
    "pl",
    "pr",
    "r",
    "s",
    "sh",
    "sl",
    "st",
    "t",
    "tr",
    "v",
    "w",
    "z",
]
_VOWELS = ("a", "e", "i", "o", "u", "ai", "ea", "oo", "ou", "y")
_CODAS = ("", "", "n", "r", "s", "t", "l", "m", "nd", "st", "ck", "ng", "x", "p")
GENERATOR_VERSION = "v3"
LEXICON_SEED = 20240517  # the vocabulary is the same for every seed of reviews


def _lexicon(size: int, rng: random.Random, taken: set[str]) -> list[str]:
    """`size` distinct pronounceable made-up words of one to three syllables."""
    words: list[str] = []
    while len(words) < size:
        syllables = rng.choices((1, 2, 3), weights=(3, 5, 2))[0]
        word = "".join(
            rng.choice(_ONSETS) + rng.choice(_VOWELS) + rng.choice(_CODAS) for _ in range(syllables)
        )
        if word not in taken:
            taken.add(word)
            words.append(word)
    return words


class _Zipf:
    """Draws from `words` with probability ∝ 1 / rank^exponent."""

    def __init__(self, words: list[str], exponent: float = 1.1) -> None:
        self.words = words
        self.cumulative = list(
            itertools.accumulate(1 / r**exponent for r in range(1, len(words) + 1))
        )

    def __call__(self, rng: random.Random) -> str:
        return rng.choices(self.words, cum_weights=self.cumulative)[0]


class _Lexicon:
    """The demo's word classes; category noun pools and sentiment adjectives overlap little."""

    def __init__(self) -> None:
        rng = random.Random(LEXICON_SEED)
        taken: set[str] = set()
        nouns = _lexicon(1800, rng, taken)
        self.products = {
            c: _Zipf(nouns[i * 60 : (i + 1) * 60], 0.9) for i, c in enumerate(CATEGORIES)
        }
        self.nouns = _Zipf(nouns[len(CATEGORIES) * 60 :], 0.9)
        adjectives = _lexicon(900, rng, taken)
        self.good = _Zipf(adjectives[:150], 1.0)
        self.bad = _Zipf(adjectives[150:300], 1.0)
        self.adjectives = _Zipf(adjectives[300:])
        self.verbs = _Zipf(_lexicon(700, rng, taken))
        self.adverbs = _Zipf(_lexicon(200, rng, taken))
        self._collocates: dict[tuple[str, str], list[str]] = {}

    def collocates(self, word: str, kind: str) -> list[str]:
        """The three words of class `kind` that most often follow `word` (fixed per word, like
        "customer service"): what a bigram table learns and a small GRU must memorize."""
        key = (word, kind)
        if key not in self._collocates:
            pool = {"noun": self.nouns, "adj": self.adjectives, "verb": self.verbs}
            pool["adv"] = self.adverbs
            rng = random.Random(f"{LEXICON_SEED}/{word}/{kind}")
            self._collocates[key] = [pool[kind](rng) for _ in range(3)]
        return self._collocates[key]


def _sentiment(lex: _Lexicon, rng: random.Random, rating: int) -> str:
    pool = lex.good if rating >= 4 else lex.bad if rating <= 2 else rng.choice((lex.good, lex.bad))
    return pool(rng) if rng.random() < 0.7 else lex.adjectives(rng)


def _sentence(lex: _Lexicon, rng: random.Random, product: str, category: str, rating: int) -> str:
    """One sentence; its phrases come in either order and some words are optional."""
    adj = _sentiment(lex, rng, rating)
    maybe = rng.choice(INTENSIFIERS) + " " if rng.random() < 0.4 else ""
    noun, verb, adverb = lex.nouns(rng), lex.verbs(rng), lex.adverbs(rng)
    if rng.random() < 0.3:
        noun = f"{lex.adjectives(rng)} {noun}"
    if rng.random() < 0.4:  # often another product of the category, not the one bought
        product = lex.products[category](rng)
    person = rng.choice(PEOPLE)
    when = f"every {rng.choice(TIMES)}" if rng.random() < 0.5 else f"after a {rng.choice(TIMES)}"
    if rng.random() < FREE_SENTENCES:
        return _free(lex, rng, product, rating)
    choice = rng.randrange(9)
    if choice == 0:
        parts = [f"the {product} is {maybe}{adj}", f"and the {noun} is {lex.adjectives(rng)}"]
    elif choice == 1:
        parts = [f"my {person} {verb}s the {product}", when]
    elif choice == 2:
        parts = [f"it {verb}s the {noun} {adverb}", f"with the {lex.nouns(rng)}"]
    elif choice == 3:
        parts = [f"the {noun} {verb}s {adverb}", f"in the {lex.nouns(rng)}"]
    elif choice == 4:
        parts = [f"{adj} {product}", f"{lex.adjectives(rng)} {noun}"]
    elif choice == 5:
        parts = [f"i {verb} this {product} {when}", f"for the {noun}"]
    elif choice == 6:
        parts = [f"shipping was {maybe}{lex.adjectives(rng)}", f"the box was {adj}"]
    elif choice == 7:
        parts = [rng.choice(VERDICTS[rating]), f"if you need a {product}"]
    else:
        parts = [f"it is {maybe}{adj} for the price", f"compared to my old {noun}"]
    if rng.random() < 0.3:
        parts.append(lex.adverbs(rng))
    if rng.random() < 0.5:
        parts.reverse()
    return ", ".join(parts) if rng.random() < 0.5 else " ".join(parts)


# Most sentences are free: a first-order chain over word classes (a part-of-speech model of
# English), each content word usually one of its predecessor's few collocates. A bigram table
# learns both; the GRU's lead over it comes from what real text also has: set phrases, the
# product and the sentiment carried across sentences, and rare words that share a class.
FUNCTION_CLASSES = {
    "det": ("the", "a", "this", "my", "that", "some", "your", "every", "no", "our"),
    "prep": ("for", "with", "in", "on", "of", "to", "from", "at", "about", "after", "like"),
    "pron": ("i", "it", "you", "we", "they", "she", "he", "everyone"),
    "aux": ("is", "was", "are", "has", "had", "will", "would", "can", "does not", "did not"),
    "conj": ("and", "but", "so", "because", "or", "then", "when"),
    "it's": ("it's",),
}
TRANSITIONS: dict[str, dict[str, float]] = {
    "start": {"pron": 30, "det": 30, "adv": 10, "verb": 10, "conj": 10, "adj": 5, "it's": 5},
    "it's": {"adj": 60, "adv": 25, "det": 15},
    "pron": {"verb": 50, "aux": 40, "adv": 10},
    "aux": {"adj": 35, "verb": 25, "adv": 20, "det": 15, "end": 5},
    "det": {"noun": 60, "adj": 35, "adv": 5},
    "adj": {"noun": 55, "end": 20, "conj": 15, "prep": 10},
    "noun": {"end": 30, "prep": 25, "aux": 15, "verb": 15, "conj": 15},
    "verb": {"det": 45, "pron": 15, "adv": 15, "prep": 15, "end": 10},
    "adv": {"adj": 35, "verb": 30, "end": 20, "prep": 15},
    "prep": {"det": 60, "pron": 20, "noun": 20},
    "conj": {"pron": 50, "det": 30, "adv": 20},
}
_FUNCTION_WORDS = {c: _Zipf(list(words)) for c, words in FUNCTION_CLASSES.items()}
COLLOCATION = 0.8  # a content word is one of its predecessor's collocates
PRODUCT_AGAIN = 0.2  # a noun of a free sentence is the review's product
FREE_SENTENCES = 0.8  # the share of sentences from the chain; the rest are set phrases


def _free(lex: _Lexicon, rng: random.Random, product: str, rating: int) -> str:
    """A sentence of 2-16 words from the word-class chain; an adjective is often sentiment,
    a noun sometimes the product."""
    content = {
        "noun": lambda: lex.nouns(rng),
        "adj": lambda: _sentiment(lex, rng, rating),
        "verb": lambda: lex.verbs(rng),
        "adv": lambda: lex.adverbs(rng),
    }
    words: list[str] = []
    state = "start"
    while True:
        options = TRANSITIONS[state]
        state = rng.choices(list(options), weights=list(options.values()))[0]
        if (state == "end" and len(words) >= 2) or len(words) >= 16:
            return " ".join(words)
        if state == "end":
            state = "start"
        elif state == "noun" and rng.random() < PRODUCT_AGAIN:
            words.append(product)
        elif state in content and rng.random() < COLLOCATION:
            words.append(rng.choice(lex.collocates(words[-1] if words else "", state)))
        elif state in content:
            words.append(content[state]())
        else:
            words.append(_FUNCTION_WORDS[state](rng))


def _noisy(rng: random.Random, text: str) -> str:
    """Typos (two letters swapped), dropped and doubled words: a few percent of the words."""
    out: list[str] = []
    for word in text.split(" "):
        roll = rng.random()
        if roll < 0.015:
            continue
        if roll < 0.04 and len(word) > 3:
            i = rng.randrange(len(word) - 1)
            word = word[:i] + word[i + 1] + word[i] + word[i + 2 :]
        out.append(word)
        if roll > 0.995:
            out.append(word)
    return " ".join(out)


def _body(lex: _Lexicon, rng: random.Random, category: str, product: str, rating: int) -> str:
    """1 + a geometric number of sentences: most reviews short, a few long."""
    sentences = [f"i bought this {product} for my {rng.choice(PEOPLE)}"]
    while rng.random() < 0.78 and len(sentences) < 40:
        sentences.append(_sentence(lex, rng, product, category, rating))
    text = "".join(
        _noisy(rng, s[0].upper() + s[1:]) + rng.choice((". ", ". ", "! ", ".<br />"))
        for s in sentences
    )
    return text.replace("it's", "it&#39;s").strip()


def write_sample_reviews(out: Path, rows: int, seed: int = 0) -> Path:
    """Write `rows` synthetic reviews to the CSV `out` (atomically); same seed, same bytes."""
    lex = _Lexicon()
    rng = random.Random(seed)
    letters = "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(out) as tmp, tmp.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(COLUMNS)
        for _ in range(rows):
            category = rng.choice(CATEGORIES)
            product = lex.products[category](rng)
            product_id = "B0" + "".join(rng.choices(letters, k=8))
            rating = rng.choices(range(1, 6), weights=RATING_WEIGHTS)[0]
            title = rng.choice(TITLES[rating]).replace("it's", "it&#39;s")
            review_id = "R" + "".join(rng.choices(letters, k=13))
            body = _body(lex, rng, category, product, rating)
            writer.writerow((review_id, product_id, category, rating, title, body, "en"))
    return out


def demo_dataset(directory: Path, rows: int) -> Path:
    """The demo reviews in `directory`, written on first use (seed 0). The file name carries the
    generator's version: a file of an older generator is not reused."""
    path = directory / f"reviews-{GENERATOR_VERSION}-{rows}.csv"
    return path if path.exists() else write_sample_reviews(path, rows=rows, seed=0)
