"""Labelled listing pairs for training and judging the matcher, split by product line.

For every SKU the generator draws

* **positives**: two independent listings of that SKU (different seller styles, so the classifier
  learns that ``Blk 32 GB`` and ``Black - 32GB`` are the same phone);
* **hard negatives**: a sibling SKU of the same family (the same model in another storage, colour,
  size, format or kit: a different product by the catalog's definition), and a SKU of the same
  brand and category but another model line (iPhone 7 against iPhone 8);
* **easy negatives**: a SKU of the same category from another brand, and one from anywhere.

The split is by **family** (model line), not by pair or even by SKU: the test set holds listings
of model lines the classifier never saw, so its accuracy says how it matches new products rather
than how well it remembers old ones.
"""

from __future__ import annotations

import random
from collections import defaultdict
from dataclasses import dataclass

from hydro_serving.demo.catalog import Product, build_catalog
from hydro_serving.demo.listings import Listing, make_listing

POSITIVES_PER_SKU = 3


@dataclass(frozen=True)
class Pair:
    left: Listing
    right: Listing
    label: int  # 1: same product
    kind: str  # positive | sibling | same_brand | same_category | random

    def as_request(self) -> dict[str, str]:
        """The pair as the demo's JSON request record."""
        return {"Title1": self.left.title, "ItemSpecifics1": self.left.specifics,
                "Title2": self.right.title, "ItemSpecifics2": self.right.specifics}


def split_families(products: list[Product], test_fraction: float, seed: int) -> tuple[list[Product], list[Product]]:
    """Hold out whole families, stratified by category so every category is in both halves."""
    rng = random.Random(seed)
    by_category: dict[str, list[str]] = defaultdict(list)
    for product in products:
        if product.family not in by_category[product.category]:
            by_category[product.category].append(product.family)
    test_families: set[str] = set()
    for category in sorted(by_category):
        fams = sorted(by_category[category])
        rng.shuffle(fams)
        test_families.update(fams[: max(1, round(len(fams) * test_fraction))])
    train = [p for p in products if p.family not in test_families]
    test = [p for p in products if p.family in test_families]
    return train, test


def make_pairs(products: list[Product], seed: int) -> list[Pair]:
    """Positives and negatives among ``products`` only (so no SKU crosses the split)."""
    rng = random.Random(seed)
    by_family: dict[str, list[Product]] = defaultdict(list)
    by_brand: dict[tuple[str, str | None], list[Product]] = defaultdict(list)
    by_category: dict[str, list[Product]] = defaultdict(list)
    for p in products:
        by_family[p.family].append(p)
        by_brand[(p.category, p.brand)].append(p)
        by_category[p.category].append(p)
    pairs: list[Pair] = []

    def add(a: Product, b: Product, kind: str) -> None:
        left, right = make_listing(a, rng), make_listing(b, rng)
        if rng.random() < 0.5:
            left, right = right, left
        pairs.append(Pair(left, right, int(a.sku == b.sku), kind))

    for product in products:
        for _ in range(POSITIVES_PER_SKU):
            add(product, product, "positive")
        siblings = [p for p in by_family[product.family] if p.sku != product.sku]
        if siblings:
            add(product, rng.choice(siblings), "sibling")
            add(product, rng.choice(siblings), "sibling")
        same_brand = [p for p in by_brand[(product.category, product.brand)] if p.family != product.family]
        if same_brand and product.brand is not None:
            add(product, rng.choice(same_brand), "same_brand")
        others = [p for p in by_category[product.category] if p.brand != product.brand or p.brand is None]
        others = [p for p in others if p.family != product.family]
        if others:
            add(product, rng.choice(others), "same_category")
        stranger = rng.choice(products)
        if stranger.family != product.family:
            add(product, stranger, "random")
    rng.shuffle(pairs)
    return pairs


def generate(seed: int = 5, test_fraction: float = 0.25) -> tuple[list[Pair], list[Pair]]:
    """(train pairs, test pairs) for ``seed``: the same lists on every run and every machine."""
    products = build_catalog(seed)
    train, test = split_families(products, test_fraction, seed)
    return make_pairs(train, seed + 1), make_pairs(test, seed + 2)
