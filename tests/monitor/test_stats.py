"""Every drift statistic against scipy's reference implementation, to 1e-9, on generated samples."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as hs
from scipy import special
from scipy import stats as st
from scipy.spatial.distance import jensenshannon

from hydro_serving.monitor import stats

TOL = 1e-9
# rounded: denormal differences (1e-308) make scipy itself numerically unstable, not a case worth testing
floats = hs.floats(min_value=-1e6, max_value=1e6, allow_nan=False, allow_infinity=False).map(lambda x: round(x, 6))
samples = hs.lists(floats, min_size=2, max_size=300).map(lambda v: np.asarray(v, dtype=np.float64))
counts = hs.dictionaries(hs.sampled_from(list("abcdefgh")), hs.integers(min_value=0, max_value=500), min_size=1)


def close(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=TOL, abs_tol=TOL) or (math.isnan(a) and math.isnan(b))


@settings(max_examples=150, deadline=None)
@given(samples, samples)
def test_ks_matches_scipy(a, b):
    ref = st.ks_2samp(a, b)
    got = stats.ks(a, b)
    assert close(got.statistic, ref.statistic) and close(got.p_value, ref.pvalue)
    assert got.drifted == (ref.pvalue < stats.ALPHA)


@settings(max_examples=150, deadline=None)
@given(samples, samples)
def test_wasserstein_matches_scipy(a, b):
    ref = st.wasserstein_distance(a, b) / max(float(np.std(a)), 0.001)
    got = stats.wasserstein_normed(a, b)
    assert math.isclose(got.statistic, ref, rel_tol=TOL, abs_tol=TOL * max(1.0, abs(ref)))
    assert got.p_value is None and got.drifted == (got.statistic >= 0.1)


@settings(max_examples=100, deadline=None)
@given(samples, samples)
def test_welch_mood_levene_match_scipy(a, b):
    if np.ptp(a) > 0 or np.ptp(b) > 0:
        t = st.ttest_ind(a, b, equal_var=False)
        got = stats.welch_t(a, b)
        if not math.isnan(t.pvalue):
            assert close(got.statistic, t.statistic) and close(got.p_value, t.pvalue)
    lv = st.levene(a, b)
    got = stats.levene(a, b)
    if not math.isnan(lv.pvalue):
        assert close(got.statistic, lv.statistic) and close(got.p_value, lv.pvalue)
    try:
        md = st.median_test(a, b)
    except ValueError:
        assert stats.mood_median(a, b).p_value == 1.0
    else:
        got = stats.mood_median(a, b)
        assert close(got.statistic, md.statistic) and close(got.p_value, md.pvalue)


@settings(max_examples=150, deadline=None)
@given(counts, counts)
def test_chi_square_matches_scipy(r, c):
    keys = sorted(set(r) | set(c))
    table = np.array([[r.get(k, 0) for k in keys], [c.get(k, 0) for k in keys]], dtype=float)
    table = table[:, table.sum(axis=0) > 0]
    got = stats.chi_square(r, c)
    if table.shape[1] < 2 or table[0].sum() == 0 or table[1].sum() == 0:
        assert got.p_value == 1.0 and not got.drifted
        return
    ref = st.chi2_contingency(table, correction=False)
    assert close(got.statistic, ref.statistic) and close(got.p_value, ref.pvalue)


@settings(max_examples=150, deadline=None)
@given(counts, counts)
def test_jensen_shannon_matches_scipy(r, c):
    keys = sorted(set(r) | set(c))
    p = np.array([r.get(k, 0) for k in keys], dtype=float)
    q = np.array([c.get(k, 0) for k in keys], dtype=float)
    got = stats.js_distance(r, c)
    if p.sum() == 0 or q.sum() == 0:
        assert got.statistic == 0.0
        return
    assert close(got.statistic, float(jensenshannon(p, q)))


@settings(max_examples=150, deadline=None)
@given(counts, counts)
def test_psi_is_symmetric_kl_on_floored_shares(r, c):
    """PSI has no scipy function; it is KL(c‖r) + KL(r‖c), which scipy's rel_entr computes."""
    keys = list(r) + [k for k in c if k not in r]
    rs = np.array([r.get(k, 0) for k in keys], dtype=float)
    cs = np.array([c.get(k, 0) for k in keys], dtype=float)
    rp = np.maximum(rs / max(rs.sum(), 1), 1e-4)
    cp = np.maximum(cs / max(cs.sum(), 1), 1e-4)
    ref = float(np.sum(special.rel_entr(cp, rp) + special.rel_entr(rp, cp)))
    got = stats.psi_categorical(r, c)
    assert math.isclose(got.statistic, ref, rel_tol=TOL, abs_tol=TOL)


def test_psi_numeric_bins_at_reference_quantiles():
    rng = np.random.default_rng(1)
    ref, cur = rng.normal(0, 1, 2000), rng.normal(0.5, 1, 800)
    edges = stats.quantile_edges(ref)
    inner = np.quantile(ref, np.linspace(0, 1, 11))[1:-1]
    assert np.allclose(edges[1:-1], inner, rtol=0, atol=TOL)
    ref_hist = stats.histogram(ref, edges)
    assert ref_hist.sum() == ref.size and np.all(np.abs(ref_hist - 200) <= 1)  # deciles: ~200 each
    # the same counts as numpy's histogram on the finite edges (bins closed on the right, ends open)
    finite = np.concatenate([[min(ref.min(), cur.min()) - 1], edges[1:-1], [max(ref.max(), cur.max()) + 1]])
    np_hist, _ = np.histogram(-cur, bins=-finite[::-1])
    assert stats.histogram(cur, edges).tolist() == np_hist[::-1].tolist()
    psi = stats.psi_numeric(ref, cur)
    assert psi.drifted and psi.statistic > 0.1


def test_unseen_categories_flag_only_with_a_complete_reference():
    assert stats.unseen_share({"a", "b"}, {"a": 5, "z": 5}, complete=True).drifted
    partial = stats.unseen_share({"a", "b"}, {"a": 5, "z": 5}, complete=False)
    assert partial.statistic == 0.5 and not partial.drifted


def test_primary_method_depends_on_sample_size():
    rng = np.random.default_rng(2)
    small = stats.numeric_drift("x", rng.normal(0, 1, 500), rng.normal(0, 1, 400))
    assert small.method == "ks" and {r.stat for r in small.results} >= {
        "ks", "wasserstein", "welch_t", "mood_median", "levene", "psi"}
    large = stats.numeric_drift("x", rng.normal(0, 1, 5000), rng.normal(0, 1, 4000))
    assert large.method == "wasserstein" and not large.drifted
    shifted = stats.numeric_drift("x", rng.normal(0, 1, 5000), rng.normal(1, 1, 4000))
    assert shifted.drifted and shifted.primary.statistic > 0.5
    cat = stats.categorical_drift("c", {"a": 3000, "b": 3000}, {"a": 1000, "b": 3000})
    assert cat.method == "jensen_shannon" and cat.drifted


@pytest.mark.parametrize("fields", [1, 4, 15])
def test_bonferroni_and_dataset_share(fields):
    assert stats.corrected_alpha(0.05, fields) == pytest.approx(0.05 / fields)
    rng = np.random.default_rng(3)
    same = [stats.numeric_drift(f"f{i}", rng.normal(0, 1, 300), rng.normal(0, 1, 300)) for i in range(4)]
    moved = [stats.numeric_drift(f"g{i}", rng.normal(0, 1, 300), rng.normal(3, 1, 300)) for i in range(4)]
    assert stats.dataset_drift(same + moved[:3]) == (pytest.approx(3 / 7), False)
    assert stats.dataset_drift(same + moved) == (0.5, True)


def test_degenerate_samples_never_raise():
    const = np.zeros(50)
    result = stats.numeric_drift("x", const, const)
    assert not result.drifted
    assert stats.numeric_drift("x", const, const + 1).drifted
    assert stats.numeric_drift("x", np.array([]), const).n_ref == 0
    assert not stats.categorical_drift("c", {"a": 10}, {"a": 4}).drifted
