"""Progress bars: nested loops share one display, and scoring and feature passes show them."""

from __future__ import annotations

import pytest

from tiny_world import trained_world
from tripwire import progress
from tripwire.detectors import create_detector


@pytest.fixture
def bars_on(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(progress, "_enabled", True)


def test_nested_loops_share_one_display(bars_on: None) -> None:
    seen = [(i, j) for i in progress.track(range(3), "outer") for j in progress.track("ab", "in")]
    assert seen == [(i, j) for i in range(3) for j in "ab"]
    assert progress._active is None


def test_a_loop_left_early_frees_the_display(bars_on: None) -> None:
    for i in progress.track(range(10), "outer"):
        if i == 2:
            break
    assert progress._active is None
    assert list(progress.track(range(2), "next")) == [0, 1]


def test_fit_and_score_run_under_progress_bars(bars_on: None) -> None:
    model, train, val = trained_world()
    for name in ("msp", "knn"):  # a scoring loop; a feature pass inside the fit and score
        det = create_detector(name).fit(model, train).calibrate(model, val)
        assert det.score(model, val).shape == (len(val),)
