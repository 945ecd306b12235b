"""Drift statistics between a reference sample and a production window: numpy and scipy only.

The choice of test follows Evidently's defaults and alibi-detect's correction, the extra numeric
tests follow the original Hydro Serving monitor:

* **small windows** (reference or window of at most ``SMALL`` values): two-sample Kolmogorov-Smirnov
  for numbers, chi-square homogeneity (a 2xk contingency table) for categories; each p-value is
  compared with ``alpha / fields`` (Bonferroni across the fields of one window);
* **large windows**: the Wasserstein distance normed by the reference's standard deviation for
  numbers, the Jensen-Shannon distance for categories, drift at ``≥ 0.1`` (a p-value is
  meaningless there: with thousands of rows every tiny difference is "significant");
* always: PSI with bins cut at the reference's quantiles (threshold 0.1) and, for numbers,
  Welch's t, Mood's median and Levene's tests (informative; the primary test decides the flag).

Every function returns a :class:`TestResult` carrying statistic, p-value (None for distances),
threshold and the drifted flag, so a window keeps the evidence and not only a yes/no.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from scipy import stats as st

ALPHA = 0.05
SMALL = 1000  # Evidently: reference sets up to 1000 rows get statistical tests, larger ones distances
DISTANCE_THRESHOLD = 0.1
PSI_THRESHOLD = 0.1
PSI_BINS = 10
PSI_EPS = 1e-4
DATASET_SHARE = 0.5  # Evidently: the dataset drifts when at least half of its columns drift


@dataclass(frozen=True)
class TestResult:
    """One statistic on one field: ``drifted`` is ``p_value < threshold`` or ``statistic >= threshold``."""

    __test__ = False  # not a pytest test class, whatever its name

    stat: str
    statistic: float
    p_value: float | None
    threshold: float
    drifted: bool

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: a non-finite statistic (a constant reference against a moved window) becomes None."""
        out = asdict(self)
        if not math.isfinite(self.statistic):
            out["statistic"] = None
        return out


def _p_result(stat: str, statistic: float, p: float, alpha: float) -> TestResult:
    p = float(p)
    if math.isnan(p):  # e.g. both samples constant and equal: nothing to tell them apart
        p = 1.0
    return TestResult(stat, float(statistic), p, alpha, p < alpha)


# ---- numbers ------------------------------------------------------------------------------------


def ks(ref: np.ndarray, cur: np.ndarray, alpha: float = ALPHA) -> TestResult:
    """Two-sample Kolmogorov-Smirnov (scipy's exact/asymptotic choice)."""
    res = st.ks_2samp(ref, cur)
    return _p_result("ks", res.statistic, res.pvalue, alpha)


def welch_t(ref: np.ndarray, cur: np.ndarray, alpha: float = ALPHA) -> TestResult:
    """Welch's t-test (unequal variances): has the mean moved?"""
    if np.ptp(ref) == 0 and np.ptp(cur) == 0:
        same = bool(ref[0] == cur[0])
        return TestResult("welch_t", 0.0 if same else math.inf, 1.0 if same else 0.0, alpha, not same)
    res = st.ttest_ind(ref, cur, equal_var=False)
    return _p_result("welch_t", res.statistic, res.pvalue, alpha)


def mood_median(ref: np.ndarray, cur: np.ndarray, alpha: float = ALPHA) -> TestResult:
    """Mood's median test: has the median moved?"""
    try:
        res = st.median_test(ref, cur)
    except ValueError:  # every value equals the grand median: no evidence either way
        return TestResult("mood_median", 0.0, 1.0, alpha, False)
    return _p_result("mood_median", res.statistic, res.pvalue, alpha)


def levene(ref: np.ndarray, cur: np.ndarray, alpha: float = ALPHA) -> TestResult:
    """Levene's test (median-centred, i.e. Brown-Forsythe): has the spread changed?"""
    res = st.levene(ref, cur)
    return _p_result("levene", res.statistic, res.pvalue, alpha)


def wasserstein_normed(ref: np.ndarray, cur: np.ndarray, threshold: float = DISTANCE_THRESHOLD) -> TestResult:
    """Earth mover's distance between the empirical distributions over the reference's std (Evidently).

    Computed from the two empirical CDFs on the merged support, so it is exact (scipy's
    ``wasserstein_distance`` is the reference in the tests).
    """
    a, b = np.sort(ref), np.sort(cur)
    allv = np.concatenate([a, b])
    allv.sort(kind="mergesort")
    deltas = np.diff(allv)
    cdf_a = np.searchsorted(a, allv[:-1], side="right") / a.size
    cdf_b = np.searchsorted(b, allv[:-1], side="right") / b.size
    distance = float(np.sum(np.abs(cdf_a - cdf_b) * deltas))
    norm = max(float(np.std(ref)), 0.001)
    value = distance / norm
    return TestResult("wasserstein", value, None, threshold, value >= threshold)


def quantile_edges(ref: np.ndarray, bins: int = PSI_BINS) -> np.ndarray:
    """Bin edges at the reference's quantiles (duplicates merged), open at both ends."""
    inner = np.unique(np.quantile(ref, np.linspace(0.0, 1.0, bins + 1))[1:-1])
    return np.concatenate([[-np.inf], inner, [np.inf]])


def histogram(values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Counts per bin ``(e[i], e[i+1]]`` except the first, which also holds its left edge: one rule for both sides."""
    idx = np.searchsorted(edges[1:-1], values, side="left")
    return np.bincount(idx, minlength=len(edges) - 1)


def psi_from_counts(ref_counts: np.ndarray, cur_counts: np.ndarray, threshold: float = PSI_THRESHOLD) -> TestResult:
    """Population stability index ``Σ (c - r) · ln(c / r)`` over shares floored at 1e-4 (Evidently's floor)."""
    r = np.maximum(ref_counts / max(ref_counts.sum(), 1), PSI_EPS)
    c = np.maximum(cur_counts / max(cur_counts.sum(), 1), PSI_EPS)
    value = float(np.sum((c - r) * np.log(c / r)))
    return TestResult("psi", value, None, threshold, value >= threshold)


def psi_numeric(ref: np.ndarray, cur: np.ndarray, bins: int = PSI_BINS,
                threshold: float = PSI_THRESHOLD) -> TestResult:
    edges = quantile_edges(ref, bins)
    return psi_from_counts(histogram(ref, edges), histogram(cur, edges), threshold)


# ---- categories ---------------------------------------------------------------------------------


def aligned_counts(ref: Mapping[str, float], cur: Mapping[str, float]) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Both count tables over the union of their categories (reference order first)."""
    keys = list(ref) + [k for k in cur if k not in ref]
    return (keys, np.array([float(ref.get(k, 0)) for k in keys]), np.array([float(cur.get(k, 0)) for k in keys]))


def chi_square(ref: Mapping[str, float], cur: Mapping[str, float], alpha: float = ALPHA) -> TestResult:
    """Chi-square test of homogeneity on the 2xk table (reference counts, window counts)."""
    _, r, c = aligned_counts(ref, cur)
    keep = (r + c) > 0
    r, c = r[keep], c[keep]
    if r.size < 2 or r.sum() == 0 or c.sum() == 0:
        return TestResult("chi_square", 0.0, 1.0, alpha, False)
    res = st.chi2_contingency(np.vstack([r, c]), correction=False)
    return _p_result("chi_square", res.statistic, res.pvalue, alpha)


def js_distance(ref: Mapping[str, float], cur: Mapping[str, float],
                threshold: float = DISTANCE_THRESHOLD) -> TestResult:
    """Jensen-Shannon distance (natural log, as scipy and Evidently) between the category shares."""
    _, r, c = aligned_counts(ref, cur)
    if r.sum() == 0 or c.sum() == 0:
        return TestResult("jensen_shannon", 0.0, None, threshold, False)
    p, q = r / r.sum(), c / c.sum()
    m = (p + q) / 2.0
    with np.errstate(divide="ignore", invalid="ignore"):
        kl_p = np.where(p > 0, p * np.log(p / m), 0.0).sum()
        kl_q = np.where(q > 0, q * np.log(q / m), 0.0).sum()
    value = math.sqrt(max((kl_p + kl_q) / 2.0, 0.0))
    return TestResult("jensen_shannon", value, None, threshold, value >= threshold)


def psi_categorical(ref: Mapping[str, float], cur: Mapping[str, float],
                    threshold: float = PSI_THRESHOLD) -> TestResult:
    _, r, c = aligned_counts(ref, cur)
    return psi_from_counts(r, c, threshold)


def unseen_share(known: Sequence[str] | set[str], cur: Mapping[str, float], complete: bool,
                 threshold: float = 0.0) -> TestResult:
    """Share of window values outside the reference's categories (Hydrosphere's unseen-category check).

    When the reference lists only its most common categories (``complete`` False) a value outside
    them may still be a known rare one, so the check is reported but never flags drift.
    """
    total = sum(cur.values())
    unseen = sum(v for k, v in cur.items() if k not in known)
    share = unseen / total if total else 0.0
    return TestResult("unseen_categories", share, None, threshold, complete and share > threshold)


# ---- a field, a window --------------------------------------------------------------------------


@dataclass(frozen=True)
class FieldDrift:
    """All statistics of one field in one window; ``method`` names the statistic that sets ``drifted``."""

    field: str
    kind: str  # numeric | categorical | text (tested on its length)
    n_ref: int
    n_cur: int
    method: str
    drifted: bool
    results: tuple[TestResult, ...]

    def result(self, stat: str) -> TestResult | None:
        return next((r for r in self.results if r.stat == stat), None)

    @property
    def primary(self) -> TestResult:
        found = self.result(self.method)
        assert found is not None
        return found

    def to_dict(self) -> dict[str, Any]:
        return {"field": self.field, "kind": self.kind, "n_ref": self.n_ref, "n_cur": self.n_cur,
                "method": self.method, "drifted": self.drifted, "score": self.primary.to_dict()["statistic"],
                "p_value": self.primary.p_value, "threshold": self.primary.threshold,
                "results": [r.to_dict() for r in self.results]}


def numeric_drift(field: str, ref: Sequence[float] | np.ndarray, cur: Sequence[float] | np.ndarray,
                  alpha: float = ALPHA, small: int = SMALL, kind: str = "numeric") -> FieldDrift:
    """Every numeric statistic; the primary one is KS for small samples, normed Wasserstein above."""
    r = np.asarray(ref, dtype=np.float64)
    c = np.asarray(cur, dtype=np.float64)
    r, c = r[np.isfinite(r)], c[np.isfinite(c)]
    if r.size == 0 or c.size == 0:
        empty = TestResult("ks", 0.0, 1.0, alpha, False)
        return FieldDrift(field, kind, int(r.size), int(c.size), "ks", False, (empty,))
    with warnings.catch_warnings():  # constant samples make some tests divide by zero: they answer NaN, read as p=1
        warnings.simplefilter("ignore", RuntimeWarning)
        primary = ks(r, c, alpha) if min(r.size, c.size) <= small else wasserstein_normed(r, c)
        results = [primary]
        if primary.stat != "ks":
            results.append(ks(r, c, alpha))
        else:
            results.append(wasserstein_normed(r, c))
        if r.size >= 2 and c.size >= 2:
            results += [welch_t(r, c, alpha), mood_median(r, c, alpha), levene(r, c, alpha)]
        results.append(psi_numeric(r, c))
    return FieldDrift(field, kind, int(r.size), int(c.size), primary.stat, primary.drifted, tuple(results))


def categorical_drift(field: str, ref: Mapping[str, float], cur: Mapping[str, float], alpha: float = ALPHA,
                      small: int = SMALL, complete: bool = True) -> FieldDrift:
    """Chi-square for small samples, Jensen-Shannon above; PSI and unseen categories always."""
    n_ref, n_cur = int(sum(ref.values())), int(sum(cur.values()))
    if min(n_ref, n_cur) <= small:
        primary, other = chi_square(ref, cur, alpha), js_distance(ref, cur)
    else:
        primary, other = js_distance(ref, cur), chi_square(ref, cur, alpha)
    results = (primary, other, psi_categorical(ref, cur), unseen_share(set(ref), cur, complete))
    return FieldDrift(field, "categorical", n_ref, n_cur, primary.stat, primary.drifted, results)


def corrected_alpha(alpha: float, fields: int) -> float:
    """Bonferroni: ``alpha / m`` for ``m`` simultaneous tests."""
    return alpha / max(fields, 1)


def dataset_drift(fields: Sequence[FieldDrift], share: float = DATASET_SHARE) -> tuple[float, bool]:
    """(share of drifted fields, whether that share reaches ``share``)."""
    if not fields:
        return 0.0, False
    drifted = sum(1 for f in fields if f.drifted) / len(fields)
    return drifted, drifted >= share
