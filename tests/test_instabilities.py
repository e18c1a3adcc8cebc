"""Tests of loss-based instability detection and sharpness confirmation."""

import numpy as np
import pytest

from sklearn_eos._instabilities import (
    DEFAULT_RTOL,
    Episode,
    LossInstabilityDetector,
    above_threshold,
    confirm_with_sharpness,
    find_instabilities,
)

SPIKE_STARTS = (20, 45, 70)
SPIKE_PROFILE = (1.5, 2.0, 1.5)  # multiples of the running minimum


def decreasing(n=100):
    return 0.99 ** np.arange(n)


def with_spikes(n=100, starts=SPIKE_STARTS, profile=SPIKE_PROFILE):
    """Decreasing loss with spikes to 2x the running minimum, 3 steps long."""
    losses = decreasing(n)
    for s in starts:
        reference = losses[s - 1]
        losses[s : s + len(profile)] = reference * np.asarray(profile)
    return losses


def assert_episodes_equal(a, b):
    assert a.keys() == b.keys()
    for key in a:
        np.testing.assert_array_equal(a[key], b[key])
        assert a[key].dtype == b[key].dtype


def test_flat_and_decreasing_losses_have_no_episode():
    for losses in (np.ones(50), decreasing(), np.zeros(10)):
        episodes = find_instabilities(losses)
        assert all(len(v) == 0 for v in episodes.values())
        assert set(episodes) == {"start", "end", "peak_loss_ratio", "completed"}


def test_three_spikes_start_end_and_peak():
    episodes = find_instabilities(with_spikes())
    np.testing.assert_array_equal(episodes["start"], SPIKE_STARTS)
    np.testing.assert_array_equal(episodes["end"], [s + 3 for s in SPIKE_STARTS])
    np.testing.assert_allclose(episodes["peak_loss_ratio"], 2.0)
    assert episodes["completed"].all()
    assert episodes["start"].dtype == np.int64
    assert episodes["completed"].dtype == bool


def test_small_wiggles_are_not_counted():
    # Every odd step 5 % above the previous (even) step: below rtol=0.1.
    losses = decreasing() * np.where(np.arange(100) % 2, 1.05, 1.0)
    assert len(find_instabilities(losses)["start"]) == 0
    # ... yet they are rises above the running minimum: a small rtol counts them.
    assert len(find_instabilities(losses, rtol=0.01)["start"]) == 50
    # Added to the spikes, they do not change the episodes.
    wiggly = with_spikes() * np.where(np.arange(100) % 2, 1.05, 1.0)
    np.testing.assert_array_equal(find_instabilities(wiggly)["start"], SPIKE_STARTS)


def test_rise_at_exactly_the_tolerance_is_not_an_episode():
    losses = [1.0, 1.0 + DEFAULT_RTOL, 1.0 + 2 * DEFAULT_RTOL, 0.9]
    episodes = find_instabilities(losses)
    np.testing.assert_array_equal(episodes["start"], [2])
    np.testing.assert_array_equal(episodes["end"], [3])


def test_running_minimum_resumes_after_episode():
    # After the episode ends at 0.5, the next rise is measured from 0.5.
    losses = [1.0, 3.0, 0.5, 0.6, 0.54, 0.4]
    episodes = find_instabilities(losses)
    np.testing.assert_array_equal(episodes["start"], [1, 3])
    np.testing.assert_array_equal(episodes["end"], [2, 4])
    np.testing.assert_allclose(episodes["peak_loss_ratio"], [3.0, 1.2])


def test_spike_open_at_the_end_is_closed_at_last_step():
    losses = with_spikes()[:72]  # the third spike starts at 70 and is cut at 71
    episodes = find_instabilities(losses)
    np.testing.assert_array_equal(episodes["start"], SPIKE_STARTS)
    np.testing.assert_array_equal(episodes["end"], [23, 48, 71])
    np.testing.assert_array_equal(episodes["completed"], [True, True, False])
    np.testing.assert_allclose(episodes["peak_loss_ratio"], 2.0)

    detector = LossInstabilityDetector()
    for step, loss in enumerate(losses):
        detector.update(step, loss)
    assert detector.in_instability
    assert detector.n_completed == 2
    assert detector.open_episode == Episode(70, 71, 2.0, completed=False)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_loss_is_divergence_not_episode(bad):
    losses = with_spikes()
    losses[50] = bad
    losses[21] = bad  # inside the first spike
    episodes = find_instabilities(losses)
    np.testing.assert_array_equal(episodes["start"], SPIKE_STARTS)
    np.testing.assert_array_equal(episodes["end"], [23, 48, 73])

    detector = LossInstabilityDetector()
    assert not detector.diverged
    assert detector.update(0, 1.0) is None
    assert detector.update(1, bad) is None
    assert detector.diverged
    assert detector.n_completed == 0 and not detector.in_instability
    # All-NaN input does not crash either.
    assert len(find_instabilities(np.full(5, np.nan))["start"]) == 0
    # non-finite losses after an episode opened do not move its end: it stays at the last
    # finite loss, as InstabilityTracker (which never passes them on) has it; the end was
    # put on the last non-finite step (audit)
    for tail in ([bad], [bad, bad, bad]):
        with_tail = find_instabilities([1.0, 2.0, *tail])
        assert with_tail["end"].tolist() == [1] == find_instabilities([1.0, 2.0])["end"].tolist()
    detector = LossInstabilityDetector()
    for t, loss in enumerate([1.0, 2.0, bad, bad]):
        detector.update(t, loss)
    assert detector.open_episode.end == 1 and detector.to_dict()["end"].tolist() == [1]


def test_online_events_and_properties():
    losses = with_spikes()
    detector = LossInstabilityDetector()
    events = {}
    for step, loss in enumerate(losses):
        event = detector.update(step, loss)
        if event is not None:
            events[step] = event
        assert detector.in_instability == any(s <= step < s + 3 for s in SPIKE_STARTS)
        assert detector.n_completed == sum(step >= s + 3 for s in SPIKE_STARTS)
    expected = {s: "start" for s in SPIKE_STARTS} | {s + 3: "end" for s in SPIKE_STARTS}
    assert events == expected
    assert detector.open_episode is None
    assert detector.episodes == tuple(Episode(s, s + 3, 2.0) for s in SPIKE_STARTS)
    assert detector.running_min == losses[-1]


@pytest.mark.parametrize("seed", range(5))
def test_online_detector_and_offline_function_agree(seed):
    rng = np.random.default_rng(seed)
    # Noisy decreasing curve with occasional bumps; ends at a random point.
    n = 500
    losses = np.exp(-np.arange(n) / 200) * np.exp(rng.normal(0, 0.15, n))
    rtol = 0.2
    offline = find_instabilities(losses, rtol=rtol)
    detector = LossInstabilityDetector(rtol=rtol)
    starts, ends = [], []
    for step, loss in enumerate(losses):
        event = detector.update(step, loss)
        (starts if event == "start" else ends if event == "end" else []).append(step)
    assert_episodes_equal(detector.to_dict(), offline)
    assert len(offline["start"]) > 5
    n_done = int(offline["completed"].sum())
    np.testing.assert_array_equal(offline["start"], starts)
    np.testing.assert_array_equal(offline["end"][:n_done], ends)
    # Episodes are ordered and disjoint; each peak is above the tolerance.
    assert np.all(offline["start"][1:] >= offline["end"][:-1])
    assert np.all(offline["peak_loss_ratio"] > 1 + rtol)


def test_detector_input_validation():
    with pytest.raises(ValueError, match="rtol"):
        LossInstabilityDetector(rtol=-0.1)
    with pytest.raises(ValueError, match="rtol"):
        LossInstabilityDetector(rtol=np.nan)
    detector = LossInstabilityDetector()
    detector.update(3, 1.0)
    with pytest.raises(ValueError, match="Steps must increase"):
        detector.update(3, 1.0)
    detector.update(10, 1.0)  # gaps are fine
    with pytest.raises(ValueError, match="1-D"):
        find_instabilities(np.ones((3, 3)))


@pytest.mark.parametrize("resolution", [-1e-7, np.nan, np.inf, True, "1e-7"])
def test_resolution_is_validated(resolution):
    with pytest.raises(ValueError, match="resolution"):
        LossInstabilityDetector(resolution=resolution)


def test_rises_below_the_resolution_of_the_first_loss_are_not_episodes():
    """A converged loss wiggles by rounding: relative rises of 50% at 1e-20 of the first loss
    counted as episodes (audit of session 19, hF/find_02). A floor of resolution * the first
    loss drops them and keeps a rise above it, however small its loss."""
    losses = [1.0, 0.5, 0.8, 0.4, 1e-20, 1.5e-20, 1e-21, 1.5e-21, 5e-22, 2e-16, 1e-22]
    plain = find_instabilities(losses)
    np.testing.assert_array_equal(plain["start"], [2, 5, 7, 9])
    floored = find_instabilities(losses, resolution=1e-16)
    np.testing.assert_array_equal(floored["start"], [2, 9])  # 2e-16 - 5e-22 > 1e-16 * 1.0
    np.testing.assert_array_equal(floored["end"], [3, 10])
    # the floor is relative to the first finite loss
    scaled = find_instabilities([np.nan] + [1e6 * loss for loss in losses], resolution=1e-16)
    np.testing.assert_array_equal(scaled["start"], [3, 10])


def test_above_threshold():
    np.testing.assert_array_equal(
        above_threshold([3.9, 4.0, 4.1, np.nan], 4.0), [False, False, True, False]
    )
    np.testing.assert_array_equal(
        above_threshold([3.0, 3.0], [2.0, 4.0]), [True, False]
    )


def test_confirm_with_sharpness():
    episodes = {
        "start": np.array([5, 25, 42, 71]),
        "end": np.array([8, 33, 44, 75]),
    }
    steps = np.array([10, 20, 30, 40, 50, 60, 70])
    thresholds = 4.0
    # Episode 0 (5-8): no measurement at or before 5, none in [5, 8] -> False.
    # Episode 1 (25-33): window [20, 33] holds 20 and 30; 30 is above -> True.
    # Episode 2 (42-44): window [40, 44] holds 40 (before start), above -> True.
    # Episode 3 (71-75): window [70, 75] holds 70, below -> False.
    sharpness = np.array([5.0, 3.0, 4.5, 4.2, 5.0, 3.0, 3.0])
    np.testing.assert_array_equal(
        confirm_with_sharpness(episodes, steps, sharpness, thresholds),
        [False, True, True, False],
    )
    # A measurement inside the window (at 10) confirms episode 0 if it is in it.
    episodes_late_end = {"start": np.array([5]), "end": np.array([10])}
    assert confirm_with_sharpness(episodes_late_end, steps, sharpness, thresholds)[0]
    # Per-measurement thresholds (e.g. after a decay 2 / lr doubles).
    per_step = np.array([4.0, 4.0, 8.0, 8.0, 8.0, 8.0, 8.0])
    np.testing.assert_array_equal(
        confirm_with_sharpness(episodes, steps, sharpness, per_step),
        [False, False, False, False],
    )
    # Works on detector output, including no episodes.
    found = find_instabilities(with_spikes())
    assert confirm_with_sharpness(found, steps, np.full(7, 5.0), 4.0).all()
    empty = find_instabilities(decreasing())
    assert confirm_with_sharpness(empty, steps, sharpness, 4.0).shape == (0,)


def test_confirm_with_sharpness_validation():
    episodes = {"start": np.array([1]), "end": np.array([2])}
    with pytest.raises(ValueError, match="strictly increasing"):
        confirm_with_sharpness(episodes, [10, 10], [1.0, 1.0], 1.0)
    with pytest.raises(ValueError, match="one value per measurement"):
        confirm_with_sharpness(episodes, [10, 20], [1.0, 1.0, 1.0], 1.0)


def test_an_open_episode_closes_at_the_last_finite_step():
    """As documented (the docs said 'the last step seen' before audit A of session 37): a
    curve that ends in non-finite losses closes its open episode at the last finite one."""
    episodes = find_instabilities([1.0, 2.0, np.nan, np.inf])
    assert episodes["start"].tolist() == [1] and episodes["end"].tolist() == [1]
    assert episodes["completed"].tolist() == [False]
