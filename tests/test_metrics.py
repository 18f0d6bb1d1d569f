"""Tests of tripwire.metrics: against sklearn, hand-computed cases, and hypothesis properties."""

from __future__ import annotations

import doctest
import importlib
import itertools

import numpy as np
import pytest
import sklearn.metrics as skm
import torch
from hypothesis import example, given, settings
from hypothesis import strategies as st

from tripwire import metrics as M
from tripwire.errors import InvalidInputError

POOLED = {
    "auroc": M.auroc,
    "aupr_in": M.aupr_in,
    "aupr_out": M.aupr_out,
    "tnr_at_tpr95": M.tnr_at_tpr95,
    "fpr_at_tpr95_ood_positive": M.fpr_at_tpr95_ood_positive,
    "detection_accuracy": M.detection_accuracy,
}


def _random_pair(seed: int, n_id: int = 300, n_an: int = 200, shift: float = 1.0, decimals=None):
    rng = np.random.default_rng(seed)
    id_s = rng.normal(0.0, 1.0, n_id)
    an_s = rng.normal(shift, 1.3, n_an)
    if decimals is not None:  # coarse rounding makes many ties
        id_s, an_s = np.round(id_s, decimals), np.round(an_s, decimals)
    return id_s, an_s


def _labels(id_s, an_s, anomaly_positive: bool = True):
    y = np.r_[np.zeros(id_s.size), np.ones(an_s.size)]
    return y if anomaly_positive else 1 - y


# ---- reference implementations through sklearn's ROC curve (the usual way in OOD code) ----


def _ref_tnr_at_tpr(id_s, an_s, level):
    """ID positive, scores negated; first ROC point reaching the level."""
    fpr, tpr, _ = skm.roc_curve(
        _labels(id_s, an_s, False), -np.r_[id_s, an_s], drop_intermediate=False
    )
    j = np.flatnonzero(tpr >= level - 1e-12)[0]
    return 1.0 - fpr[j]


def _ref_fpr_ood_positive(id_s, an_s, level):
    fpr, tpr, _ = skm.roc_curve(_labels(id_s, an_s), np.r_[id_s, an_s], drop_intermediate=False)
    j = np.flatnonzero(tpr >= level - 1e-12)[0]
    return fpr[j]


def _ref_detection_accuracy(id_s, an_s):
    """ODIN-style: 1 - min over thresholds of 0.5 P_in(error) + 0.5 P_out(error)."""
    cands = np.r_[-np.inf, np.unique(np.r_[id_s, an_s])]
    err = [0.5 * np.mean(id_s > t) + 0.5 * np.mean(an_s <= t) for t in cands]
    return 1.0 - min(err)


# ---- against sklearn on random data ----


@pytest.mark.parametrize("decimals", [None, 1])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_against_sklearn(seed, decimals):
    id_s, an_s = _random_pair(seed, decimals=decimals)
    y_an = _labels(id_s, an_s)
    s = np.r_[id_s, an_s]
    assert M.auroc(id_s, an_s) == pytest.approx(skm.roc_auc_score(y_an, s), abs=1e-12)
    assert M.auroc(id_s, an_s) == pytest.approx(skm.roc_auc_score(1 - y_an, -s), abs=1e-12)
    assert M.aupr_out(id_s, an_s) == pytest.approx(skm.average_precision_score(y_an, s))
    assert M.aupr_in(id_s, an_s) == pytest.approx(skm.average_precision_score(1 - y_an, -s))
    for level in (0.5, 0.8, 0.9, 0.95, 0.99, 1.0):
        assert M.tnr_at_tpr(id_s, an_s, level) == pytest.approx(_ref_tnr_at_tpr(id_s, an_s, level))
        assert M.fpr_at_tpr_ood_positive(id_s, an_s, level) == pytest.approx(
            _ref_fpr_ood_positive(id_s, an_s, level)
        )
    assert M.detection_accuracy(id_s, an_s) == pytest.approx(_ref_detection_accuracy(id_s, an_s))
    fpr, tpr, thr = M.roc_curve(id_s, an_s)
    rf, rt, rthr = skm.roc_curve(y_an, s)
    np.testing.assert_allclose(fpr, rf)
    np.testing.assert_allclose(tpr, rt)
    np.testing.assert_allclose(thr, rthr)


def test_tnr_at_tpr95_realised_rate_is_at_least_95_percent():
    id_s, an_s = _random_pair(5, n_id=1000, n_an=1000)
    tnr = M.tnr_at_tpr95(id_s, an_s)
    t = np.sort(id_s)[949]  # k = ceil(0.95 * 1000) = 950-th smallest
    assert np.mean(id_s <= t) == pytest.approx(0.95)
    assert tnr == pytest.approx(np.mean(an_s > t))
    # one step lower would accept fewer than 95 % of ID inputs
    assert np.mean(id_s <= np.sort(id_s)[948]) < 0.95


# ---- hand-computed small cases ----


def test_perfect_separation():
    id_s, an_s = np.array([0.1, 0.2, 0.3]), np.array([0.7, 0.8])
    assert M.auroc(id_s, an_s) == 1.0
    assert M.aupr_in(id_s, an_s) == 1.0
    assert M.aupr_out(id_s, an_s) == 1.0
    assert M.tnr_at_tpr95(id_s, an_s) == 1.0
    assert M.tnr_at_tpr(id_s, an_s, tpr=1.0) == 1.0
    assert M.fpr_at_tpr95_ood_positive(id_s, an_s) == 0.0
    assert M.detection_accuracy(id_s, an_s) == 1.0


def test_reversed_separation():
    id_s, an_s = np.array([0.7, 0.8]), np.array([0.1, 0.2, 0.3])
    assert M.auroc(id_s, an_s) == 0.0
    assert M.tnr_at_tpr95(id_s, an_s) == 0.0
    assert M.fpr_at_tpr95_ood_positive(id_s, an_s) == 1.0
    assert M.detection_accuracy(id_s, an_s) == 0.5  # the trivial threshold


def test_identical_distributions_large_sample():
    rng = np.random.default_rng(0)
    id_s, an_s = rng.normal(size=20_000), rng.normal(size=20_000)
    assert M.auroc(id_s, an_s) == pytest.approx(0.5, abs=0.01)
    assert M.tnr_at_tpr95(id_s, an_s) == pytest.approx(0.05, abs=0.01)
    assert M.fpr_at_tpr95_ood_positive(id_s, an_s) == pytest.approx(0.95, abs=0.01)
    assert M.aupr_out(id_s, an_s) == pytest.approx(0.5, abs=0.02)
    assert M.detection_accuracy(id_s, an_s) == pytest.approx(0.5, abs=0.02)


def test_all_scores_tied():
    id_s, an_s = np.zeros(10), np.zeros(7)
    assert M.auroc(id_s, an_s) == 0.5
    assert M.tnr_at_tpr95(id_s, an_s) == 0.0  # ties with the threshold are accepted
    assert M.fpr_at_tpr95_ood_positive(id_s, an_s) == 1.0  # ties with the threshold are flagged
    assert M.detection_accuracy(id_s, an_s) == 0.5
    assert M.aupr_out(id_s, an_s) == pytest.approx(7 / 17)


def test_ties_at_the_threshold():
    id_s, an_s = [1, 2, 3, 4], [3, 5, 6, 7]
    assert M.auroc(id_s, an_s) == pytest.approx((2.5 + 4 + 4 + 4) / 16)
    assert M.tnr_at_tpr(id_s, an_s, tpr=0.5) == 1.0  # t = 2
    assert M.tnr_at_tpr(id_s, an_s, tpr=0.75) == 0.75  # t = 3; anomaly at 3 accepted
    assert M.tnr_at_tpr(id_s, an_s, tpr=0.76) == 0.75  # t = 4
    assert M.fpr_at_tpr_ood_positive(id_s, an_s, tpr=1.0) == 0.5  # t = 3; ID at 3 and 4 flagged
    # repeated ID scores: 95 % needs the tied block, realised TPR becomes 100 %
    assert M.tnr_at_tpr95([0] * 10 + [5] * 10, [4.0, 6.0]) == 0.5


def test_level_rounding_is_exact():
    # 0.55 * 100 is 55.00000000000001 in floating point: k must still be 55, not 56
    assert M.tnr_at_tpr(np.arange(100.0), [54.5], tpr=0.55) == 1.0
    assert M.fpr_at_tpr_ood_positive([-54.5], -np.arange(100.0), tpr=0.55) == 0.0
    id_s = np.arange(20.0)
    assert M.tnr_at_tpr95(id_s, [18.5]) == 1.0
    assert M.fpr_at_tpr95_ood_positive([0.5], np.arange(20.0)) == 0.0
    for n in range(1, 200):
        x = np.arange(float(n))
        realised = np.mean(x <= np.sort(x)[int(np.ceil(0.95 * n - 1e-9)) - 1])
        assert realised >= 0.95 and (realised - 1 / n) < 0.95
        assert M.tnr_at_tpr95(x, [x[-1] + 1, x[-1]]) == pytest.approx(0.5 if realised == 1 else 1.0)


def test_detection_accuracy_hand():
    # thresholds: t=2 -> 0.5 (2/3 + 1) ; t=3 -> 0.5 (1 + 2/3)
    assert M.detection_accuracy([1, 2, 3], [2.5, 4, 5]) == pytest.approx(5 / 6)


def test_torch_and_numpy_agree():
    id_s, an_s = _random_pair(3, decimals=2)
    for name, fn in POOLED.items():
        t = fn(torch.from_numpy(id_s).float(), torch.from_numpy(an_s).float())
        n = fn(id_s.astype(np.float32), an_s.astype(np.float32))
        assert t == pytest.approx(n), name
    # bfloat16 (no numpy dtype) and tensors needing grad are fine too
    assert M.auroc(torch.tensor([0.0, 1.0], dtype=torch.bfloat16), torch.tensor([2.0])) == 1.0
    assert M.auroc(torch.tensor([0.0, 1.0], requires_grad=True), torch.tensor([2.0])) == 1.0


# ---- rates of a thresholded detector ----


def test_rates_at_thresholds():
    r = M.rates_at_thresholds(np.array([False, False, True, False]), np.array([True, False]))
    assert r == M.Rates(tpr=0.75, tnr=0.5)
    assert r.tpr == 0.75 and r.tnr == 0.5
    assert M.rates_at_thresholds(torch.tensor([0, 1]), [1, 1, 1]) == (0.5, 1.0)


# ---- class-weighted ----


def test_class_weighted_one_class_equals_pooled():
    id_s, an_s = _random_pair(7, decimals=1)
    for weighting in ("anomaly", "id", "pooled"):
        for name, fn in POOLED.items():
            cw = M.class_weighted(
                fn, id_s, np.full(id_s.size, 3), an_s, np.full(an_s.size, 3), weighting=weighting
            )
            assert cw == pytest.approx(fn(id_s, an_s)), name


def test_class_weighted_hand_and_weightings():
    id_s = [0.1, 0.5, 0.2, 0.3]
    id_p = [0, 1, 1, 2]  # class 2: ID only -> skipped
    an_s = [0.9, 0.4, 0.3]
    an_p = [0, 1, 1]
    # class 0: AUROC 1 ; class 1: ID {0.5, 0.2} vs anomalies {0.4, 0.3}: 0.5
    assert M.class_weighted(M.auroc, id_s, id_p, an_s, an_p) == pytest.approx(1 / 3 + 2 / 3 * 0.5)
    # ID shares 1/4, 2/4 (1/4 skipped) -> renormalised 1/3, 2/3
    assert M.class_weighted(M.auroc, id_s, id_p, an_s, an_p, weighting="id") == pytest.approx(2 / 3)
    # pooled shares (1+1)/7, (2+2)/7, (1)/7 skipped -> 1/3, 2/3
    b = M.class_breakdown(M.auroc, id_s, id_p, an_s, an_p, weighting="pooled")
    np.testing.assert_array_equal(b.classes, [0, 1, 2])
    np.testing.assert_allclose(b.weights, [1 / 3, 2 / 3, 0])
    np.testing.assert_array_equal(b.n_id, [1, 2, 1])
    np.testing.assert_array_equal(b.n_anomaly, [1, 2, 0])
    assert np.isnan(b.values[2])
    assert b.skipped_share == pytest.approx(1 / 7)
    assert b.weighted == pytest.approx(2 / 3)


def test_class_weighted_anomaly_weights_give_realised_tnr_of_per_class_thresholds():
    rng = np.random.default_rng(11)
    n_cls = 4
    id_s, an_s = rng.normal(size=2000), rng.normal(1.0, 1.0, size=700)
    id_p, an_p = rng.integers(0, n_cls, 2000), rng.choice(n_cls, 700, p=[0.6, 0.3, 0.05, 0.05])
    flags_an = np.zeros(an_s.size, bool)
    for c in range(n_cls):
        ids = np.sort(id_s[id_p == c])
        t = ids[int(np.ceil(0.95 * ids.size - 1e-9)) - 1]
        flags_an[an_p == c] = an_s[an_p == c] > t
    cw = M.class_weighted(M.tnr_at_tpr95, id_s, id_p, an_s, an_p, num_classes=n_cls)
    assert cw == pytest.approx(flags_an.mean())


def test_summarize_keys_and_values():
    id_s, an_s = _random_pair(4)
    out = M.summarize(id_s, an_s)
    assert list(out) == list(POOLED)
    for name, fn in POOLED.items():
        assert out[name] == fn(id_s, an_s)
    rng = np.random.default_rng(0)
    id_p, an_p = rng.integers(0, 3, id_s.size), rng.integers(0, 3, an_s.size)
    out = M.summarize(id_s, an_s, id_p, an_p)
    assert set(out) == set(POOLED) | {f"{k}_class_weighted" for k in POOLED} | {
        "class_weighted_skipped_share"
    }
    assert out["auroc_class_weighted"] == pytest.approx(
        M.class_weighted(M.auroc, id_s, id_p, an_s, an_p)
    )
    assert out["class_weighted_skipped_share"] == 0.0
    assert all(isinstance(v, float) for v in out.values())


# ---- bad input ----


@pytest.mark.parametrize(
    "bad",
    [
        np.zeros((3, 2)),
        np.zeros(0),
        np.array([0.1, np.nan]),
        np.array([np.inf, 0.0]),
        np.array(["a", "b"]),
        np.array([True, False]),
        np.float64(0.3),
        torch.zeros(2, 2),
        [[0.1], [0.2]],
    ],
)
@pytest.mark.parametrize("name", list(POOLED))
def test_bad_scores_raise(bad, name):
    fn = POOLED[name]
    with pytest.raises(InvalidInputError):
        fn(bad, np.array([0.1, 0.2]))
    with pytest.raises(InvalidInputError):
        fn(np.array([0.1, 0.2]), bad)


@pytest.mark.parametrize("level", [0.0, -0.1, 1.5, float("nan"), "0.95"])
def test_bad_level_raises(level):
    with pytest.raises(InvalidInputError, match="tpr"):
        M.tnr_at_tpr([0.0, 1.0], [2.0], tpr=level)
    with pytest.raises(InvalidInputError, match="tpr"):
        M.fpr_at_tpr_ood_positive([0.0, 1.0], [2.0], tpr=level)


def test_bad_predictions_raise():
    id_s, an_s = np.array([0.1, 0.2]), np.array([0.3])
    with pytest.raises(InvalidInputError, match="shape"):
        M.class_weighted(M.auroc, id_s, [0], an_s, [0])
    with pytest.raises(InvalidInputError, match=">= 0"):
        M.class_weighted(M.auroc, id_s, [0, -1], an_s, [0])
    with pytest.raises(InvalidInputError, match="num_classes"):
        M.class_weighted(M.auroc, id_s, [0, 5], an_s, [0], num_classes=3)
    with pytest.raises(InvalidInputError, match="integer"):
        M.class_weighted(M.auroc, id_s, [0.0, 1.0], an_s, [0])
    with pytest.raises(InvalidInputError, match="both"):
        M.class_weighted(M.auroc, id_s, [0, 0], an_s, [1])
    with pytest.raises(InvalidInputError, match="weighting"):
        M.class_weighted(M.auroc, id_s, [0, 0], an_s, [0], weighting="classes")
    with pytest.raises(InvalidInputError, match="neither"):
        M.summarize(id_s, an_s, id_pred=[0, 0])


def test_bad_flags_raise():
    with pytest.raises(InvalidInputError):
        M.rates_at_thresholds([0.2, 0.9], [True])
    with pytest.raises(InvalidInputError):
        M.rates_at_thresholds([True], [])
    with pytest.raises(InvalidInputError):
        M.rates_at_thresholds([[True]], [True])


# ---- properties (hypothesis) ----

# integer-valued scores from a small range: exact under the transforms below, and full of ties
scores = st.lists(st.integers(-40, 40), min_size=1, max_size=40).map(
    lambda v: np.array(v, dtype=np.float64)
)
levels = st.sampled_from([0.05, 0.3, 0.5, 0.9, 0.95, 0.99, 1.0])
PROPS = settings(max_examples=60, deadline=None)
TRANSFORMS = [lambda x: 3.0 * x + 7.0, lambda x: x**3, lambda x: np.exp(x / 10.0), np.arctan]


@PROPS
@given(scores, scores)
@example(np.array([-1.0]), np.array([0.0] * 6 + [1.0, 2.0, 3.0]))  # AP's float sum: 1 + 2e-16
def test_prop_values_in_unit_interval(id_s, an_s):
    for name, fn in POOLED.items():
        v = fn(id_s, an_s)
        assert 0.0 <= v <= 1.0, name
    assert M.detection_accuracy(id_s, an_s) >= 0.5


@PROPS
@given(scores, scores, st.sampled_from(range(len(TRANSFORMS))))
def test_prop_invariant_under_increasing_transforms(id_s, an_s, k):
    f = TRANSFORMS[k]
    for name, fn in POOLED.items():
        assert fn(f(id_s), f(an_s)) == pytest.approx(fn(id_s, an_s), abs=1e-12), name


@PROPS
@given(scores, scores, levels)
def test_prop_negation_and_role_swaps(id_s, an_s, level):
    a = M.auroc(id_s, an_s)
    assert M.auroc(-id_s, -an_s) == pytest.approx(1.0 - a, abs=1e-12)  # roles kept
    assert M.auroc(an_s, id_s) == pytest.approx(1.0 - a, abs=1e-12)  # roles swapped
    assert M.auroc(-an_s, -id_s) == pytest.approx(a, abs=1e-12)  # both: unchanged
    # ID-positive metrics are the OOD-positive ones with roles swapped and scores negated
    assert M.aupr_in(id_s, an_s) == pytest.approx(M.aupr_out(-an_s, -id_s), abs=1e-12)
    assert M.tnr_at_tpr(id_s, an_s, level) == pytest.approx(
        1.0 - M.fpr_at_tpr_ood_positive(-an_s, -id_s, level), abs=1e-12
    )
    assert M.detection_accuracy(id_s, an_s) == pytest.approx(
        M.detection_accuracy(-an_s, -id_s), abs=1e-12
    )


@PROPS
@given(scores, scores, levels)
def test_prop_operating_points_agree_with_roc_reference(id_s, an_s, level):
    assert M.tnr_at_tpr(id_s, an_s, level) == pytest.approx(_ref_tnr_at_tpr(id_s, an_s, level))
    assert M.fpr_at_tpr_ood_positive(id_s, an_s, level) == pytest.approx(
        _ref_fpr_ood_positive(id_s, an_s, level)
    )
    assert M.detection_accuracy(id_s, an_s) == pytest.approx(_ref_detection_accuracy(id_s, an_s))
    # the best balanced accuracy is at least that of the TNR-at-TPR operating point
    assert (
        M.detection_accuracy(id_s, an_s) >= 0.5 * (level + M.tnr_at_tpr(id_s, an_s, level)) - 1e-12
    )


@PROPS
@given(scores, scores)
def test_prop_tnr_non_increasing_in_level(id_s, an_s):
    vals = [M.tnr_at_tpr(id_s, an_s, lv) for lv in (0.1, 0.5, 0.9, 0.95, 1.0)]
    assert all(a >= b for a, b in itertools.pairwise(vals))


@PROPS
@given(scores, scores, st.integers(0, 9), st.sampled_from(["anomaly", "id", "pooled"]))
def test_prop_class_weighted_single_class_is_pooled(id_s, an_s, c, weighting):
    id_p, an_p = np.full(id_s.size, c), np.full(an_s.size, c)
    for fn in (M.auroc, M.tnr_at_tpr95, M.detection_accuracy):
        assert M.class_weighted(fn, id_s, id_p, an_s, an_p, weighting=weighting) == pytest.approx(
            fn(id_s, an_s)
        )


# ---- the docstring examples run ----


@pytest.mark.parametrize("module", ["__init__", "curves", "thresholds", "per_class", "summary"])
def test_docstring_examples(module):
    name = "tripwire.metrics" + ("" if module == "__init__" else f".{module}")
    mod = importlib.import_module(name)
    result = doctest.testmod(mod, extraglobs={"np": np})
    assert result.attempted > 0 and result.failed == 0
