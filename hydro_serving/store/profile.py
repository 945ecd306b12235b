"""Profile of training data from a CSV file: the baseline drift monitoring compares traffic with.

Standard library ``csv`` plus numpy (no pandas): per column its type (integer, float, string),
count of present values, missing values, and for numbers min/max/mean/std and the 5/25/50/75/95
percentiles; for strings the number of distinct values and the most common ones. Values are
held in memory per column, which is fine for training sets that fit a laptop.

``sample`` (numbers) and ``length_sample`` (strings, their lengths in characters) keep at most
``SAMPLE`` values drawn uniformly without replacement with a fixed seed: the reference side of
the monitor's two-sample tests (KS, Welch, Levene, ...), which quantiles alone cannot give.
"""

from __future__ import annotations

import csv
import math
import re
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from hydro_serving.errors import ValidationError

MISSING = {"", "na", "n/a", "nan", "null", "none"}
QUANTILES = (5, 25, 50, 75, 95)
TOP = 10
SAMPLE = 1000  # values kept per column for two-sample drift tests (hydro_serving.monitor)
_SNIFF = 64 * 1024


def _is_int(text: str) -> bool:
    t = text[1:] if text[:1] in "+-" else text
    return t.isdigit()


def _to_float(text: str) -> float | None:
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


_YAML_KEY = re.compile(r"^[A-Za-z_][\w .-]*:(\s|$)")
_YAML_ITEM = re.compile(r"^-(\s|$)")


def _looks_like_yaml(sample: str) -> bool:
    """YAML read as CSV gives one column and a row per line (a signature was once profiled as 61 rows).

    The file is YAML when its first meaningful line is a document marker, a directive, a ``key:``
    or a ``- item``, and that line has no CSV delimiter in it (a header ``a:b,c`` stays CSV).
    """
    for line in sample.splitlines():
        text = line.strip()
        if not text or text.startswith("#"):
            continue
        if text.startswith(("---", "%YAML")):
            return True
        if any(d in text for d in ",;\t|"):
            return False
        return bool(_YAML_KEY.match(text) or _YAML_ITEM.match(text))
    return False


def _read_rows(path: Path) -> tuple[list[str], list[list[str]]]:
    def bad(why: str) -> ValidationError:
        return ValidationError(f"training data {path.name} is not a CSV file: {why}", field="training_data")

    try:
        with open(path, "rb") as fh:
            head = fh.read(_SNIFF)
    except FileNotFoundError as exc:
        raise ValidationError(f"training data file {path} does not exist", field="training_data") from exc
    except OSError as exc:
        raise ValidationError(f"cannot read training data {path}: {exc.strerror}", field="training_data") from exc
    if b"\x00" in head:
        raise bad("it holds binary data")
    try:
        sample = head.decode("utf-8")
    except UnicodeDecodeError:
        # the sample may cut a multi-byte character in half at its end
        try:
            sample = head[:-4].decode("utf-8")
        except UnicodeDecodeError as exc:
            raise bad("it is not UTF-8 text") from exc
    if sample.lstrip()[:1] in ("{", "["):
        raise bad("it looks like JSON")
    if _looks_like_yaml(sample):
        raise bad("it looks like YAML")
    try:
        dialect: Any = csv.Sniffer().sniff(sample.split("\n", 20)[0] if sample else sample, delimiters=",;\t|")
    except csv.Error:
        dialect = csv.excel
    rows: list[list[str]] = []
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            reader = csv.reader(fh, dialect)
            header = next(reader, None)
            if not header or not any(h.strip() for h in header):
                raise bad("no header row")
            for row in reader:
                if not row:
                    continue
                if len(row) != len(header):
                    raise bad(f"line {reader.line_num} has {len(row)} values, the header has {len(header)}")
                rows.append(row)
    except UnicodeDecodeError as exc:
        raise bad("it is not UTF-8 text") from exc
    except csv.Error as exc:
        raise bad(str(exc)) from exc
    if not rows:
        raise bad("no data rows under the header")
    return [h.strip() for h in header], rows


def _numeric_stats(values: list[float]) -> dict[str, Any]:
    arr = np.asarray(values, dtype=np.float64)
    qs = np.percentile(arr, QUANTILES)
    return {
        "min": float(arr.min()), "max": float(arr.max()), "mean": float(arr.mean()), "std": float(arr.std()),
        "quantiles": {f"p{q}": float(v) for q, v in zip(QUANTILES, qs, strict=True)},
    }


def _sample(values: list[float] | list[int]) -> list[Any]:
    """At most ``SAMPLE`` of ``values``, the same ones on every run (seeded, order kept)."""
    if len(values) <= SAMPLE:
        return list(values)
    keep = np.sort(np.random.default_rng(0).choice(len(values), size=SAMPLE, replace=False))
    return [values[i] for i in keep]


def profile_column(name: str, raw: list[str]) -> dict[str, Any]:
    """Profile one column; a column is numeric only if every present value is a finite number."""
    present = [v.strip() for v in raw if v.strip().lower() not in MISSING]
    out: dict[str, Any] = {"name": name, "count": len(present), "missing": len(raw) - len(present)}
    numbers = [_to_float(v) for v in present]
    if present and all(n is not None for n in numbers):
        out["type"] = "integer" if all(_is_int(v) for v in present) else "float"
        present_numbers = [n for n in numbers if n is not None]
        out.update(_numeric_stats(present_numbers))
        out["sample"] = _sample(present_numbers)
        return out
    out["type"] = "string" if present else "empty"
    counts = Counter(present)
    out["unique"] = len(counts)
    out["top"] = [{"value": v, "count": c} for v, c in counts.most_common(TOP)]
    if present:
        out["length_sample"] = _sample([len(v) for v in present])
    return out


def profile_csv(path: str | Path) -> dict[str, Any]:
    """The training-data profile stored in a manifest; ValidationError if the file is not CSV."""
    path = Path(path)
    header, rows = _read_rows(path)
    columns = [profile_column(name or f"column_{i}", [row[i] for row in rows]) for i, name in enumerate(header)]
    return {"source": path.name, "rows": len(rows), "columns": columns}
