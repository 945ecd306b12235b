"""Numeric features of a pair of product listings: the one definition used by training and serving.

The product-matching classifier is only as good as the agreement between the features it was
trained on and the features it is served; so this file is the single implementation, imported by
path both by ``handler.py`` (the ``pm-features`` function) and by the training code in
``hydro_serving.demo``. It depends on the standard library only (numpy is not even needed), and it
needs no fitted vocabulary: character n-gram similarity is computed pair by pair, so there is no
TF-IDF table to version alongside the model.

A listing is a title and an eBay-style ItemSpecifics string, ``'Key': ' value'; 'Key': ' value'``
(values carry a leading space, and sellers write inches as ``4''``). The parser is tolerant: it
splits on ``;`` and the first ``:``, strips one layer of quotes, and skips what it cannot read, so
garbled or truncated specifics cost information, never an error.

Agreement features are three-valued where a value can be unknown: ``1`` agree, ``0`` disagree,
``-1`` unknown (neither listing says). Jaccard-style agreements lie in ``[0, 1]`` or are ``-1``.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field

# The order is the model's input order (and the signature's); append, never reorder.
FEATURE_NAMES: tuple[str, ...] = (
    "title_jaccard",
    "title_overlap",
    "title_char_cosine",
    "text_char_cosine",
    "spec_char_cosine",
    "numeric_jaccard",
    "length_ratio",
    "brand_match",
    "model_match",
    "code_match",
    "mpn_match",
    "storage_match",
    "color_match",
    "size_match",
    "spec_value_agreement",
)

UNKNOWN = -1.0


def _words(*lines: str) -> list[str]:
    return [word for line in lines for word in line.split()]


# Words that say nothing about which product a listing is (a fixed list, not a fitted vocabulary).
_FILLER = frozenset(_words(
    "a an and the with w for of in on to by new brand sealed genuine original oem authentic fast free ship",
    "shipping shipped l k look excellent great good mint condition used works tested nib usa us seller",
    "warranty box retail lot sale hot deal best 100 %",
))

# Values that mean "the seller did not know".
_NO_VALUE = frozenset(
    ["", "does not apply", "n/a", "na", "not applicable", "none", "unknown", "-", "see description",
     "unbranded", "generic", "no brand", "unbranded/generic", "null"]
)

_KEY_ALIASES: dict[str, str] = {
    "brand": "brand", "designer/brand": "brand", "manufacturer": "brand", "make": "brand",
    "model": "model", "model number": "model", "model name": "model", "product model": "model",
    "mpn": "mpn", "manufacturer part number": "mpn", "part number": "mpn", "mfr part number": "mpn",
    "upc": "code", "ean": "code", "isbn": "code", "isbn-10": "code", "isbn-13": "code", "gtin": "code",
    "isbn13": "code", "isbn10": "code",
    "color": "color", "colour": "color", "main color": "color", "manufacturer color": "color",
    "storage capacity": "storage", "storage": "storage", "internal storage": "storage",
    "hard drive capacity": "storage", "ssd capacity": "storage", "memory": "storage", "ram size": "storage",
    "ram": "storage",
    "screen size": "size", "display size": "size", "size": "size", "shoe size": "size", "us shoe size": "size",
    "us shoe size (men's)": "size", "size (men's)": "size", "bottoms size (men's)": "size",
    "capacity": "size", "length": "size", "wattage": "size", "tank capacity": "size", "voltage": "size",
    "format": "size", "lens": "size", "kit": "size",
}

# A fixed colour vocabulary, with the abbreviations sellers use.
_COLORS: dict[str, str] = {c: c for c in _words(
    "black white silver gold gray red blue green pink purple yellow orange brown navy midnight graphite",
    "jet slate bronze coral titanium teal beige khaki stonewash rinse indigo rose space smoke charcoal",
    "oxford cream ivory copper onyx empire pistachio aqua lavender burgundy maroon olive tan",
    "champagne platinum pearl matte",
)}
_COLORS.update({"grey": "gray", "blk": "black", "bk": "black", "wht": "white", "wh": "white", "slvr": "silver",
                "sil": "silver", "gry": "gray", "gy": "gray", "gld": "gold", "blu": "blue", "rd": "red",
                "grn": "green", "pnk": "pink", "nvy": "navy"})

_TOKEN = re.compile(r"[a-z0-9]+(?:\.[0-9]+[a-z]*)?")
_UNIT_JOIN = re.compile(r"(\d)\s+(gb|tb|mb|mp|qt|oz|w|v|ft|mm|in|inch|gal|mah|hz)\b")
_MEMORY = re.compile(r"(\d+(?:\.\d+)?)\s*(tb|gb|mb)\b")
_INCHES = re.compile(r"(\d{1,3}(?:\.\d)?)\s*(?:\"|''|”|-?\s*inch(?:es)?\b|-?\s*in\b|')")
_DIMENSIONS = re.compile(r"\b(\d{2})\s*x\s*(\d{2})\b")
_SIZE_WORD = re.compile(r"\b(?:size|sz)\s*[:#]?\s*([a-z0-9.]+)")
_CLOTHING = {"xs": "xs", "x-small": "xs", "small": "s", "s": "s", "medium": "m", "med": "m", "m": "m",
             "large": "l", "lg": "l", "l": "l", "x-large": "xl", "xl": "xl", "xlarge": "xl", "xxl": "xxl",
             "2xl": "xxl", "xx-large": "xxl", "3xl": "xxxl", "xxxl": "xxxl"}


@dataclass
class Listing:
    """One side of a pair, parsed once: tokens, normalised specifics, extracted attributes."""

    title: str
    specifics: dict[str, str]
    tokens: list[str] = field(default_factory=list)
    canon: dict[str, str] = field(default_factory=dict)
    codes: set[str] = field(default_factory=set)


# ---- parsing ---------------------------------------------------------------------------------------


def parse_specifics(raw: str | Mapping[str, object] | None) -> dict[str, str]:
    """``"'Brand': ' Apple'; 'Screen Size': ' 4''"`` -> ``{"Brand": "Apple", "Screen Size": "4'"}``.

    Splitting on ``;`` and then on the first ``:`` (instead of one big regular expression) is what
    makes garbled input degrade gracefully: a broken segment is skipped, the others still count.
    A mapping (JSON object) is accepted as already parsed.
    """
    if raw is None:
        return {}
    if isinstance(raw, Mapping):
        return {str(k).strip(): str(v).strip() for k, v in raw.items() if v is not None}
    out: dict[str, str] = {}
    for segment in str(raw).split(";"):
        key, sep, value = segment.partition(":")
        if not sep:
            continue
        key = key.strip().strip("'\"` ").strip()
        value = value.strip()
        if value[:1] in ("'", '"'):
            value = value[1:]
        if value[-1:] in ("'", '"'):
            value = value[:-1]
        value = value.strip()
        if key and value:
            out[key] = value
    return out


def _normalise_text(text: str) -> str:
    text = text.lower().replace("&", " and ")
    return _UNIT_JOIN.sub(r"\1\2", text)


def tokens(text: str) -> list[str]:
    """Lower-case word/number tokens with units glued to their numbers (``32 GB`` -> ``32gb``)."""
    return _TOKEN.findall(_normalise_text(text))


def _compact(text: str) -> str:
    return re.sub(r"[^a-z0-9]", "", text.lower())


def _known(value: str | None) -> bool:
    return value is not None and value.strip().lower() not in _NO_VALUE


def _normalise_code(value: str) -> str | None:
    digits = re.sub(r"\D", "", value)
    if len(digits) == 12:  # UPC-A is EAN-13 with a leading zero
        digits = "0" + digits
    return digits if len(digits) >= 8 else None


def parse_listing(title: str, specifics: str | Mapping[str, object] | None) -> Listing:
    """Parse one listing: canonical specifics (brand, model, ...) keyed by their aliases' meaning."""
    spec = parse_specifics(specifics)
    listing = Listing(title=title, specifics=spec, tokens=tokens(title))
    for token in listing.tokens:  # sellers paste a book's ISBN or a UPC into the title
        if token.isdigit() and len(token) in (12, 13):
            listing.codes.add(_normalise_code(token) or token)
    for key, value in spec.items():
        canon = _KEY_ALIASES.get(key.strip().lower())
        if canon is None or not _known(value):
            continue
        if canon == "code":
            code = _normalise_code(value)
            if code:
                listing.codes.add(code)
        elif canon not in listing.canon:
            listing.canon[canon] = value
    return listing


# ---- similarity helpers ------------------------------------------------------------------------------


def jaccard(a: set[str], b: set[str]) -> float:
    if not a and not b:
        return 0.0
    return len(a & b) / len(a | b)


def char_ngrams(text: str, n: int = 3) -> Counter[str]:
    """Character n-grams of the normalised text, words padded by spaces so word starts count."""
    text = " " + " ".join(tokens(text)) + " "
    return Counter(text[i:i + n] for i in range(max(0, len(text) - n + 1)))


def cosine(a: Counter[str], b: Counter[str]) -> float:
    if not a or not b:
        return 0.0
    small, large = (a, b) if len(a) < len(b) else (b, a)
    dot = sum(count * large.get(gram, 0) for gram, count in small.items())
    norm = math.sqrt(sum(v * v for v in a.values())) * math.sqrt(sum(v * v for v in b.values()))
    return min(1.0, dot / norm) if norm else 0.0


def _content(tokens_: list[str]) -> set[str]:
    return {t for t in tokens_ if t not in _FILLER}


def _contains_sequence(haystack: list[str], needle: list[str]) -> bool:
    if not needle:
        return False
    width = len(needle)
    return any(haystack[i:i + width] == needle for i in range(len(haystack) - width + 1))


def _named_match(a: Listing, b: Listing, key: str) -> float:
    """Brand or model agreement: specifics against specifics, else one's value in the other's title."""
    va, vb = a.canon.get(key), b.canon.get(key)
    if va and vb:
        return 1.0 if _compact(va) == _compact(vb) else 0.0
    if va or vb:
        value, other = (va, b) if va else (vb, a)
        assert value is not None
        return 1.0 if _contains_sequence(other.tokens, tokens(value)) else 0.0
    return UNKNOWN


def _mpn_match(a: Listing, b: Listing) -> float:
    va, vb = a.canon.get("mpn"), b.canon.get("mpn")
    if va and vb:
        return 1.0 if _compact(va) == _compact(vb) else 0.0
    if va or vb:
        value, other = (va, b) if va else (vb, a)
        assert value is not None
        code = _compact(value)
        return 1.0 if len(code) >= 4 and code in _compact(other.title) else UNKNOWN
    return UNKNOWN


def _code_match(a: Listing, b: Listing) -> float:
    if a.codes and b.codes:
        return 1.0 if a.codes & b.codes else 0.0
    return UNKNOWN


def _memory_values(listing: Listing) -> set[str]:
    text = _normalise_text(listing.title + " " + listing.canon.get("storage", ""))
    out = set()
    for number, unit in _MEMORY.findall(text):
        gigabytes = float(number) * {"tb": 1024.0, "gb": 1.0, "mb": 1 / 1024}[unit]
        out.add(f"{gigabytes:g}")
    return out


def _colors(text: str) -> set[str]:
    return {_COLORS[t] for t in tokens(text) if t in _COLORS}


def _color_values(listing: Listing) -> set[str]:
    return _colors(listing.title) | _colors(listing.canon.get("color", ""))


def _size_token(value: str) -> str | None:
    value = value.strip().lower()
    if value in _CLOTHING:
        return _CLOTHING[value]
    match = re.match(r"^(\d+(?:\.\d+)?)", value.replace(",", "."))
    if match:
        return f"{float(match.group(1)):g}"
    compact = _compact(value)
    return compact or None


def _size_values(listing: Listing) -> set[str]:
    out: set[str] = set()
    title = listing.title.lower()
    out.update(f"{float(n):g}" for n in _INCHES.findall(title))
    out.update(f"{w}x{h}" for w, h in _DIMENSIONS.findall(title))
    for word in _SIZE_WORD.findall(title):
        token = _size_token(word)
        if token:
            out.add(token)
    spec = listing.canon.get("size")
    if spec:
        dims = _DIMENSIONS.findall(spec.lower())
        if dims:
            out.update(f"{w}x{h}" for w, h in dims)
        else:
            token = _size_token(spec)
            if token:
                out.add(token)
    return out


def _set_agreement(a: set[str], b: set[str]) -> float:
    return jaccard(a, b) if a and b else UNKNOWN


def _spec_value_agreement(a: Listing, b: Listing) -> float:
    keys_a = {k.lower(): v for k, v in a.specifics.items() if _known(v)}
    keys_b = {k.lower(): v for k, v in b.specifics.items() if _known(v)}
    shared = keys_a.keys() & keys_b.keys()
    if not shared:
        return UNKNOWN
    return sum(_compact(keys_a[k]) == _compact(keys_b[k]) for k in shared) / len(shared)


def _spec_text(listing: Listing) -> str:
    return " ".join(v for v in listing.specifics.values() if _known(v))


# ---- the features ---------------------------------------------------------------------------------------


def pair_features(title1: str, specifics1: str | Mapping[str, object] | None,
                  title2: str, specifics2: str | Mapping[str, object] | None) -> dict[str, float]:
    """All features of one pair, keyed by :data:`FEATURE_NAMES` (in that order)."""
    a, b = parse_listing(title1, specifics1), parse_listing(title2, specifics2)
    ta, tb = _content(a.tokens), _content(b.tokens)
    na, nb = {t for t in ta if any(c.isdigit() for c in t)}, {t for t in tb if any(c.isdigit() for c in t)}
    spec_a, spec_b = _spec_text(a), _spec_text(b)
    len_a, len_b = len(title1.strip()), len(title2.strip())
    values = {
        "title_jaccard": jaccard(ta, tb),
        "title_overlap": len(ta & tb) / min(len(ta), len(tb)) if ta and tb else 0.0,
        "title_char_cosine": cosine(char_ngrams(title1), char_ngrams(title2)),
        "text_char_cosine": cosine(char_ngrams(title1 + " " + spec_a), char_ngrams(title2 + " " + spec_b)),
        "spec_char_cosine": cosine(char_ngrams(spec_a), char_ngrams(spec_b)) if spec_a and spec_b else UNKNOWN,
        "numeric_jaccard": jaccard(na, nb) if na or nb else UNKNOWN,
        "length_ratio": min(len_a, len_b) / max(len_a, len_b) if max(len_a, len_b) else 0.0,
        "brand_match": _named_match(a, b, "brand"),
        "model_match": _named_match(a, b, "model"),
        "code_match": _code_match(a, b),
        "mpn_match": _mpn_match(a, b),
        "storage_match": _set_agreement(_memory_values(a), _memory_values(b)),
        "color_match": _set_agreement(_color_values(a), _color_values(b)),
        "size_match": _set_agreement(_size_values(a), _size_values(b)),
        "spec_value_agreement": _spec_value_agreement(a, b),
    }
    return {name: float(values[name]) for name in FEATURE_NAMES}


def feature_matrix(pairs: list[tuple[str, str | None, str, str | None]]) -> list[list[float]]:
    """Rows of features in :data:`FEATURE_NAMES` order, for training (the order the model sees)."""
    return [list(pair_features(*pair).values()) for pair in pairs]
