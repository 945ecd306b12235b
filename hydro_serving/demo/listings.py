"""Turning a catalog SKU into a marketplace listing the way different sellers would write it.

A matcher that only ever saw clean, identical listings would learn nothing, so each listing is
drawn from a seller *style* and then roughed up: tokens reordered, words abbreviated
(``Blk``, ``w/``, ``HC``), marketing noise (``NEW``, ``L@@K``, ``FAST SHIPPING``), the odd typo,
titles cut at eBay's 80 characters, item specifics dropped or renamed (``Colour``, ``Model
Number``), codes written as ``Does not apply``, and now and then a garbled specifics string.
The ItemSpecifics text follows the original demo exactly: ``'Key': ' value'`` joined by ``; ``,
with inches written ``4''``. Everything is drawn from the ``random.Random`` passed in.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass

from hydro_serving.demo.catalog import BOOKS, CLOTHING, Product


@dataclass(frozen=True)
class Listing:
    sku: str
    title: str
    specifics: str


_MARKETING_HEAD = ["NEW", "Brand New", "SEALED", "L@@K", "NIB", "Genuine", "OEM", "HOT", "Original"]
_MARKETING_TAIL = ["FAST SHIPPING", "Free Shipping", "Excellent Condition", "100% Original", "+ Warranty",
                   "Great Deal", "USA Seller", "Fast Ship!", "Mint", "Tested & Working", "Free Ship"]
_COLOR_ABBREV = {"black": "Blk", "white": "Wht", "silver": "Slvr", "gray": "Gry", "grey": "Gry", "gold": "Gld",
                 "blue": "Blu", "green": "Grn", "pink": "Pnk", "navy": "Nvy"}
_WORD_ABBREV = {"with": "w/", "Wireless": "Wrls", "Professional": "Pro", "Generation": "Gen", "Cordless": "Cdls",
                "Headphones": "Headphone", "Aquarium": "Aqua", "Unlocked": "Unlkd", "Battery": "Batt",
                "Batteries": "Batts", "Smartphone": "Phone", "Programmable": "Prog"}
_NOISE_SPECS = [("Cosmetic condition", ["Excellent", "Good", "Very Good", "Fair"]), ("No accessories", ["Yes", "No"]),
                ("Bundle Listing", ["No"]), ("Country/Region of Manufacture", ["China", "Vietnam", "Malaysia"]),
                ("Custom Bundle", ["No"]), ("Warranty", ["No", "30 Days", "1 Year"]),
                ("Item Condition", ["Used", "New", "Seller refurbished"])]
_KEY_RENAMES = {"Brand": ["Brand", "Brand", "Brand", "Manufacturer"], "Color": ["Color", "Color", "Colour",
                                                                                 "Main Color"],
                "Storage Capacity": ["Storage Capacity", "Storage Capacity", "Storage"],
                "Model": ["Model", "Model", "Model Number"], "MPN": ["MPN", "MPN", "Manufacturer Part Number"]}


def _variant_title(key: str, value: str, rng: random.Random, clothing: bool = False) -> str:
    """How a seller writes one variant value in a title (``32GB`` -> ``32 GB``, ``55''`` -> ``55 inch``)."""
    if key == "Storage Capacity":
        number = value[:-2]
        return rng.choice([value, value, f"{number} GB", f"{number}G", f"{number}gb"])
    if key == "Color":
        words = value.split()
        roll = rng.random()
        if roll < 0.12:
            return " ".join(_COLOR_ABBREV.get(w.lower(), w) for w in words)
        if roll < 0.2:
            return value.replace("Gray", "Grey")
        if roll < 0.28:
            return value.lower()
        return value
    if key == "Screen Size":
        number = value.rstrip("'")
        return rng.choice([f'{number}"', f"{number}''", f"{number} inch", f"{number}in", f"{number}-Inch",
                           f'{number}" Class'])
    if key in ("Size", "US Shoe Size (Men's)"):
        short = {"Small": "S", "Medium": "M", "Large": "L", "X-Large": "XL"}.get(value, value)
        if "x" in value and value[0].isdigit():
            return rng.choice([value, value.replace("x", " x "), value.upper()])
        choices = [f"Size {value}", f"Sz {short}", f"Size {short}", value]
        return rng.choice([*choices, f"Men's {short}"] if clothing else choices)
    if key == "Format":
        return rng.choice({"Hardcover": ["Hardcover", "Hard Cover", "HC", "hardback"],
                           "Paperback": ["Paperback", "Paper Back", "PB", "pbk"]}[value])
    if key == "Kit":
        return rng.choice([value, f"({value})", value.replace("with", "w/"), value.replace("Only", "")])
    return value


def _typo(word: str, rng: random.Random) -> str:
    i = rng.randrange(1, len(word) - 1)
    kind = rng.randrange(3)
    if kind == 0:
        return word[:i] + word[i + 1] + word[i] + word[i + 2:]
    if kind == 1:
        return word[:i] + word[i + 1:]
    return word[:i] + word[i] + word[i:]


def _rough_up(title: str, rng: random.Random) -> str:
    """Typos (letters only, never codes or numbers), abbreviations and shouting."""
    words = title.split()
    if rng.random() < 0.3:
        candidates = [i for i, w in enumerate(words) if w.isalpha() and len(w) >= 5]
        if candidates:
            i = rng.choice(candidates)
            words[i] = _typo(words[i], rng)
    if rng.random() < 0.3:
        words = [_WORD_ABBREV.get(w, w) if rng.random() < 0.6 else w for w in words]
    title = " ".join(words)
    if rng.random() < 0.08:
        title = title.upper()
    if len(title) > 80:  # eBay cuts titles at 80 characters; sellers cut at a word
        title = title[:80].rsplit(" ", 1)[0]
    return title


def make_title(product: Product, rng: random.Random) -> str:
    variant = [_variant_title(k, v, rng, product.category == CLOTHING) for k, v in product.variant]
    rng.shuffle(variant) if rng.random() < 0.3 else None
    brand = product.brand or ""
    extras = list(product.title_extras) if rng.random() < 0.7 else []
    kind = product.kind if rng.random() < 0.75 else ""
    if product.category == BOOKS:
        author = dict(product.specs)["Author"]
        style = rng.randrange(4)
        fmt = variant[0]
        if style == 0:
            title = f"{product.model} by {author} ({fmt})"
        elif style == 1:
            title = f"{product.model} - {author} - {fmt} Book"
        elif style == 2:
            title = f"{product.model.upper()} {author} {fmt} {rng.choice(_MARKETING_TAIL)}"
        else:
            title = f"{product.model} {fmt} ISBN {product.isbn}" if product.isbn else f"{product.model} {fmt}"
        return _rough_up(title, rng)
    style = rng.randrange(6)
    if style == 0:  # the original demo's style: "Apple iPhone 5 - 32GB - White & Silver (Verizon) Smartphone"
        title = " ".join([brand, product.model, *(f"- {v}" for v in variant), *extras, kind])
    elif style == 1:
        head = rng.choice(_MARKETING_HEAD)
        title = " ".join([head, brand, product.model, *variant, kind, rng.choice(_MARKETING_TAIL)])
    elif style == 2:  # reordered, brand dropped
        title = " ".join([product.model, *reversed(variant), *extras, kind if kind else product.kind])
    elif style == 3:
        title = f"{brand} {product.model} {kind}, " + ", ".join(variant)
    elif style == 4 and product.mpn:
        title = " ".join([brand, product.mpn, product.model, *variant, kind])
    else:
        title = " ".join([*variant[:1], brand, product.model, *variant[1:], *extras, kind,
                          rng.choice(_MARKETING_TAIL) if rng.random() < 0.5 else ""])
    return _rough_up(re.sub(r"\s+", " ", title).strip(), rng)


def _spec_value(key: str, value: str, rng: random.Random) -> str:
    if key == "Color" and " & " in value and rng.random() < 0.5:
        return value.split(" & ")[-1]  # the original demo: title "White & Silver", Color " Silver"
    if key == "Storage Capacity" and rng.random() < 0.3:
        return value[:-2] + " GB"
    if key == "Color" and rng.random() < 0.1:
        return value.replace("Gray", "Grey")
    return value


def make_specifics(product: Product, rng: random.Random) -> str:
    """The ``'Key': ' value'; ...`` string, with missing, renamed and noisy entries."""
    pairs: list[tuple[str, str]] = []
    unbranded = product.brand is None and product.category != BOOKS
    if product.brand and rng.random() < 0.85:
        pairs.append(("Brand", product.brand))
    elif unbranded and rng.random() < 0.8:
        pairs.append(("Brand", "Unbranded"))
    for key, value in product.variant:
        if rng.random() < 0.72:
            pairs.append((key, _spec_value(key, value, rng)))
    for key, value in product.specs:
        if rng.random() < (0.85 if product.category == BOOKS else 0.5):
            pairs.append((key, value))
    if product.brand and rng.random() < 0.65:
        pairs.append(("Model", product.model))
    if product.mpn and rng.random() < 0.45:
        pairs.append(("MPN", product.mpn if rng.random() < 0.9 else "Does not apply"))
    elif unbranded and rng.random() < 0.7:
        pairs.append(("MPN", "Does not apply"))
    if product.isbn and rng.random() < 0.8:
        pairs.append(("ISBN", product.isbn))
    if rng.random() < 0.5:
        if unbranded:  # like the original demo's pump: one EAN repeated under every code key
            pairs.extend((k, product.ean) for k in ("EAN", "ISBN", "UPC") if rng.random() < 0.7)
        elif rng.random() < 0.85:
            pairs.append(("UPC", product.upc))
        else:
            pairs.append(("UPC", "Does not apply"))
    if rng.random() < 0.2:
        pairs.append(("EAN", product.ean))
    for key, values in rng.sample(_NOISE_SPECS, rng.randrange(3)):
        pairs.append((key, rng.choice(values)))
    if rng.random() < 0.3:
        rng.shuffle(pairs)
    pairs = [(rng.choice(_KEY_RENAMES.get(k, [k])), v) for k, v in pairs]
    text = "; ".join(f"'{k}': ' {v}'" for k, v in pairs)
    roll = rng.random()
    if roll < 0.03:
        return ""
    if roll < 0.06:  # garbled: cut mid-way, as scrapers do
        return text[: rng.randrange(len(text) + 1)] if text else text
    if roll < 0.08:  # another tool's export: no quotes
        return "; ".join(f"{k}: {v}" for k, v in pairs)
    return text


def make_listing(product: Product, rng: random.Random) -> Listing:
    return Listing(product.sku, make_title(product, rng), make_specifics(product, rng))
