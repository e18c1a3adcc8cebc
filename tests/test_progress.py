"""Tests of the training progress report (`ProgressReport` via the estimators' ``verbose``).

``verbose=1``: a tqdm bar on stderr whose postfix shows loss, lr and (when tracking)
sharpness and 2/lr; ``verbose=2``: printed lines on stdout; ``verbose=0``: nothing.
Printed values are compared with the fitted estimator's own histories.
"""

import re
import warnings

import numpy as np
import pytest
import tqdm.auto
from sklearn.datasets import load_digits, make_regression
from sklearn.exceptions import ConvergenceWarning

from sklearn_eos import EoSClassifier, EoSRegressor, ProgressReport

N_STEPS = 20
LR = 0.3

LINE = re.compile(
    r"^step +(?P<step>\d+)/(?P<total>\d+)  loss (?P<loss>\S+)  lr (?P<lr>\S+)"
    r"(?:  sharpness (?P<sharpness>\S+) @ step (?P<measured>\d+)  2/lr (?P<threshold>\S+))?$"
)


@pytest.fixture(scope="module")
def data():
    X, y = load_digits(return_X_y=True)
    return X[:100] / 16, y[:100]


def _fit(data, **params):
    params = {"hidden_layer_sizes": (16,), "lr": LR, "max_iter": N_STEPS, "sharpness_every": 10,
              "random_state": 0, **params}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return EoSClassifier(**params).fit(*data)


def _g(x):
    return f"{x:.4g}"


def _latest_sharpness(est, step):
    """The measurement ProgressReport shows after ``step`` steps: the last one taken before
    step ``step - 1``'s update (measurements happen at the start of a step), and its step."""
    h = est.sharpness_history_
    i = np.searchsorted(h["step"], step - 1, side="right") - 1
    return h["sharpness"][i], h["threshold"][i], h["step"][i]


@pytest.fixture
def unthrottled_tqdm(monkeypatch):
    """tqdm that renders at every update (no 0.1 s mininterval), so the output is deterministic."""
    class Unthrottled(tqdm.auto.tqdm):
        def __init__(self, *args, **kwargs):
            kwargs["mininterval"] = 0
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(tqdm.auto, "tqdm", Unthrottled)


def test_verbose_2_prints_lines_with_plausible_values(data, capsys):
    est = _fit(data, verbose=2)
    out, err = capsys.readouterr()
    lines = out.splitlines()
    assert lines and err == ""
    matches = [LINE.match(line) for line in lines]
    assert all(matches), lines
    steps = [int(m["step"]) for m in matches]
    assert steps == sorted(steps) and steps[-1] == N_STEPS
    # n_lines=20 per fit, then one more for the final measurement (of the returned model)
    assert len(lines) == min(N_STEPS, 20) + 1 and steps[-2:] == [N_STEPS, N_STEPS]
    final = matches.pop()
    assert final["sharpness"] == _g(est.sharpness_history_["sharpness"][-1])
    assert est.sharpness_history_["step"][-1] == N_STEPS == int(final["measured"])
    for m in matches:
        step = int(m["step"])
        assert int(m["total"]) == N_STEPS
        assert m["lr"] == _g(est.lr_history_[step - 1]) == _g(LR)
        assert float(m["loss"]) == pytest.approx(est.loss_curve_[step - 1], rel=1e-3)
        sharpness, threshold, measured = _latest_sharpness(est, step)
        assert m["sharpness"] == _g(sharpness) and int(m["measured"]) == measured
        assert m["threshold"] == _g(threshold) == _g(2 / LR)


def test_verbose_2_says_which_step_the_sharpness_was_measured_at(data, capsys):
    """Measurements are sparse: the line at step 15 shows the step-10 measurement, and says
    so; without its step it read as the current sharpness (new-user audit)."""
    est = _fit(data, verbose=2, max_iter=20, sharpness_every=10)
    lines = {int(m["step"]): m for m in map(LINE.match, capsys.readouterr().out.splitlines())}
    h = est.sharpness_history_
    assert list(h["step"]) == [0, 10, 20]
    assert lines[10]["measured"] == "0" and lines[10]["sharpness"] == _g(h["sharpness"][0])
    assert lines[15]["measured"] == "10" and lines[15]["sharpness"] == _g(h["sharpness"][1])
    assert f"sharpness {_g(h['sharpness'][1])} @ step 10  2/lr {_g(2 / LR)}" in lines[15].string


def test_verbose_2_shows_the_tracker_whose_histories_the_fit_keeps(data, capsys):
    """With tracking off, two SharpnessTrackers of the user's: the estimator keeps the
    histories of the last one (the one before its instability tracker), and the lines showed
    the first one's measurements (helper hF's fuzz, session 25); they now show the same."""
    from sklearn_eos import SharpnessTracker

    first, last = SharpnessTracker(every=4, k=1), SharpnessTracker(every=10, k=1)
    est = _fit(data, verbose=2, max_iter=20, sharpness_every=0, callbacks=[first, last])
    lines = {int(m["step"]): m for m in map(LINE.match, capsys.readouterr().out.splitlines())}
    h = est.sharpness_history_
    assert list(h["step"]) == [0, 10, 20] and list(first.history_["step"]) == [0, 4, 8, 12, 16, 20]
    assert lines[15]["measured"] == "10" and lines[15]["sharpness"] == _g(h["sharpness"][1])


def test_verbose_2_writes_to_the_given_file(capsys):
    import io

    import torch

    from sklearn_eos import MLP, FullBatch, FullBatchNet, HalfSquaredError, ProgressReport

    out = io.StringIO()
    torch.manual_seed(0)
    net = FullBatchNet(MLP(3, 1, (4,)), criterion=HalfSquaredError, lr=0.1, max_epochs=4,
                       callbacks=[("progress", ProgressReport(4, verbose=2, file=out))])
    net.fit(FullBatch(torch.randn(20, 3), torch.randn(20, 1)))
    assert capsys.readouterr() == ("", "")
    assert [line.split("  loss")[0] for line in out.getvalue().splitlines()] == [
        f"step {t:>6}/4" for t in range(1, 5)]


def test_verbose_2_without_tracking_has_no_sharpness(data, capsys):
    _fit(data, verbose=2, sharpness_every=0, max_iter=5)
    out, _ = capsys.readouterr()
    lines = out.splitlines()
    assert len(lines) == 5
    assert all(LINE.match(line) and "sharpness" not in line and "2/lr" not in line for line in lines)
    assert lines[0].startswith("step      1/5  loss ")


def test_verbose_2_line_format_pads_the_step(data, capsys):
    _fit(data, verbose=2, sharpness_every=0, max_iter=100, hidden_layer_sizes=(2,))
    out, _ = capsys.readouterr()
    lines = out.splitlines()
    assert len(lines) == 20 and lines[-1].startswith("step    100/100  loss ")


def test_verbose_1_shows_a_tqdm_bar_on_stderr(data, capfd):
    _fit(data, verbose=1, sharpness_every=0, max_iter=5)
    out, err = capfd.readouterr()
    assert out == ""
    assert "/5 [" in err and "step" in err  # "0/5 [00:00<?, ?step/s]"


def test_verbose_1_postfix_shows_loss_lr_sharpness_threshold(data, capfd, unthrottled_tqdm):
    est = _fit(data, verbose=1)
    out, err = capfd.readouterr()
    assert out == ""
    renders = [r for r in err.split("\r") if "/%d [" % N_STEPS in r]
    assert renders and f"{N_STEPS}/{N_STEPS}" in renders[-1]
    postfixes = [re.search(r"loss=(\S+), lr=(\S+), sharpness=(\S+) @ step (\d+), 2/lr=([^\]]+)\]", r)
                 for r in renders]
    postfixes = [p for p in postfixes if p]
    assert postfixes, renders
    losses = {_g(v) for v in est.loss_curve_}
    h = est.sharpness_history_
    measurements = {(_g(v), int(t)) for v, t in zip(h["sharpness"], h["step"])}
    for p in postfixes:
        loss, lr, sharpness, measured, threshold = p.groups()
        assert loss in losses and lr == _g(LR) and threshold == _g(2 / LR)
        assert (sharpness, int(measured)) in measurements


def test_verbose_1_last_render_shows_the_last_loss(data, capfd, unthrottled_tqdm):
    est = _fit(data, verbose=1, sharpness_every=0, max_iter=5)
    _, err = capfd.readouterr()
    last = [r for r in err.split("\r") if "5/5 [" in r][-1]
    assert f"loss={_g(est.loss_curve_[-1])}" in last


def test_verbose_0_prints_nothing(data, capfd):
    _fit(data, verbose=0, max_iter=5, sharpness_every=2)
    assert capfd.readouterr() == ("", "")


def test_verbose_2_reports_where_an_early_stop_ended(data, capsys):
    est = _fit(data, verbose=2, sharpness_every=0, max_iter=200, loss_goal=10.0)
    out = capsys.readouterr().out
    assert est.n_iter_ < 200
    assert f"step {est.n_iter_:>6}/200" in out.splitlines()[-1]


def test_verbose_2_shows_no_step_past_a_divergence(capsys):
    """The loss is read before each report, so the guard stops training before a step
    past the divergence is shown (the losses are otherwise read every 32 steps)."""
    X, y = make_regression(n_samples=80, n_features=5, noise=0.1, random_state=0)
    with pytest.warns(ConvergenceWarning, match="diverged"):
        est = EoSRegressor(hidden_layer_sizes=(8,), lr=3.0, max_iter=200, sharpness_every=0, verbose=2,
                           random_state=0).fit(X, (y - y.mean()) / y.std())
    matches = [LINE.match(line) for line in capsys.readouterr().out.splitlines()]
    steps = [int(m["step"]) for m in matches]
    assert est.diverged_ and est.n_iter_ % 10 != 0  # not at a report step: caught between two
    assert steps == sorted(set(steps))
    # the last line is the returned model's (the warning tells of the divergence): the last
    # step with a finite loss, not the step whose loss was not finite
    assert steps[-1] == est.n_iter_
    assert float(matches[-1]["loss"]) == pytest.approx(est.loss_curve_[-1], rel=1e-3)


def test_verbose_2_ends_on_the_returned_model_after_a_divergence_past_the_last_step(capsys):
    """When the loss after the last step is the first non-finite one (the end-of-training
    check), no history row holds it: the last line is the last row's, the returned model's,
    as after a divergence caught during training (it went one row back, and printed the step
    before with the returned model's sharpness)."""
    from sklearn.datasets import load_diabetes
    from sklearn.preprocessing import StandardScaler

    X, y = load_diabetes(return_X_y=True)
    X, y = StandardScaler().fit_transform(X[:100]), y[:100]
    last = []
    for max_iter in (5, 50):  # diverges after the last step, and during training at step 5
        with pytest.warns(ConvergenceWarning, match="diverged at step 5"):
            est = EoSRegressor(hidden_layer_sizes=(16, 16), activation="identity", lr=6.0, dtype="float64",
                               max_iter=max_iter, sharpness_every=3, verbose=2, random_state=0)
            est.fit(X, (y - y.mean()) / y.std())
        lines = [line for line in capsys.readouterr().out.splitlines() if LINE.match(line)]
        last.append(lines[-1].split(maxsplit=2)[2])  # after "step  5/..."
        assert LINE.match(lines[-1])["step"] == "5" and est.n_iter_ == 5
        assert float(LINE.match(lines[-1])["loss"]) == pytest.approx(est.loss_curve_[-1], rel=1e-3)
    assert last[0] == last[1]


def test_a_progress_report_at_verbose_0_is_silent_and_reads_nothing(capsys):
    import torch

    from sklearn_eos import MLP, FullBatch, FullBatchNet, HalfSquaredError, ProgressReport

    report = ProgressReport(10, verbose=0)
    torch.manual_seed(0)
    net = FullBatchNet(MLP(3, 1, (4,)), criterion=HalfSquaredError, lr=0.1, max_epochs=10,
                       callbacks=[("progress", report)])
    X, y = torch.randn(20, 3), torch.randn(20, 1)
    net.fit(FullBatch(X, y))
    out, err = capsys.readouterr()
    assert out == "" and err == ""
    assert not any(report.needs_losses(net, step=t) for t in range(10))


@pytest.mark.parametrize("params, match", [
    ({"n_lines": 0}, "n_lines must be an int >= 1, got 0"),
    ({"n_lines": -3}, "n_lines must be an int >= 1"),
    ({"total": None}, "total must be an int >= 1, got None"),
    ({"verbose": -1}, "verbose must be an int >= 0"),
    ({"n_lines": 2.5}, "n_lines must be an int"),
])
def test_progress_report_settings_are_checked_when_training_starts(data, params, match):
    """n_lines=0 ended the fit in a ZeroDivisionError and total=None in a TypeError; negative
    values were accepted silently (an audit)."""
    report = ProgressReport(**{"total": 10, "verbose": 2, **params})
    with pytest.raises(ValueError, match=match):
        EoSClassifier(hidden_layer_sizes=(4,), max_iter=10, sharpness_every=0, callbacks=[report]).fit(*data)


def test_the_last_line_after_a_divergence_shows_the_rate_of_the_returned_model(capsys):
    """After a divergence the optimizer holds the rate of the dropped step, which a decay at
    that step changed: the last line said "lr 0.6 ... 2/lr 0.333" for a model trained at
    lr 6 (audit A of session 36). It shows the rate of the step it reports. (With
    decay_when_stable, the default, the decay waits for a stable step and never comes.)"""
    from sklearn.datasets import load_diabetes
    from sklearn.preprocessing import StandardScaler

    X, y = load_diabetes(return_X_y=True)
    X, y = StandardScaler().fit_transform(X[:100]), y[:100]
    with pytest.warns(ConvergenceWarning, match="diverged at step 5"):
        est = EoSRegressor(hidden_layer_sizes=(16, 16), activation="identity", lr=6.0, dtype="float64",
                           decay_time=5, decay_when_stable=False, max_iter=50, sharpness_every=3, verbose=2,
                           random_state=0)
        est.fit(X, (y - y.mean()) / y.std())
    last = [LINE.match(line) for line in capsys.readouterr().out.splitlines() if LINE.match(line)][-1]
    assert last["step"] == "5" and est.lr_history_[-1] == 6.0
    assert float(last["lr"]) == 6.0 and float(last["threshold"]) == pytest.approx(2 / 6.0, rel=1e-3)


def test_the_last_line_after_an_early_stop_that_loads_the_best_epoch_is_that_model_s(capsys):
    """With skorch's EarlyStopping(load_best=True) the last line paired the last step's loss
    with the sharpness of the returned model, an earlier step's (audit E of session 36): it
    is the returned model's line now, its step and the loss of the row before it, as every
    line shows."""
    from skorch.callbacks import EarlyStopping

    from sklearn_eos import SharpnessTracker

    X, y = make_regression(n_samples=60, n_features=4, noise=0.1, random_state=0)
    stopping = EarlyStopping(monitor="train_loss", patience=3, threshold=0.05, load_best=True)
    est = EoSRegressor(hidden_layer_sizes=(8,), lr=0.5, max_iter=200, sharpness_every=0, verbose=2,
                       callbacks=[stopping, SharpnessTracker(every=20, random_state=0)], random_state=0)
    est.fit(X, (y - y.mean()) / y.std())
    last = [LINE.match(line) for line in capsys.readouterr().out.splitlines() if LINE.match(line)][-1]
    returned = int(est.sharpness_history_["step"][-1])
    assert returned < est.n_iter_  # the early stop went back
    assert int(last["step"]) == int(last["measured"]) == returned
    assert float(last["loss"]) == pytest.approx(est.loss_curve_[returned - 1], rel=1e-3)
