"""Host reads of tensor values during a fit: the losses stay on the device between reads.

On a GPU, every read of a tensor's value on the host (``.item()``, ``float()``, ``bool()``,
``.tolist()``, ``.numpy()``, ``.cpu()``) makes the host wait until the device has finished
its queued work. These tests count such reads on the CPU, where they cost nothing, by
wrapping those methods of ``torch.Tensor``: a default fit must make O(steps / sync_every)
of them, and a tracked fit O(measurements) more, not one per step. The fitted attributes
must not depend on ``sync_every``. ``tests/test_cuda.py`` checks the same on a GPU with
``torch.cuda.set_sync_debug_mode('error')``.
"""

import collections
import signal
import warnings
from contextlib import contextmanager

import numpy as np
import pytest
import torch
from skorch.callbacks import Callback
from sklearn.datasets import load_digits, make_regression
from sklearn.exceptions import ConvergenceWarning
from sklearn.preprocessing import StandardScaler

from sklearn_eos import (EoSClassifier, EoSRegressor, FullBatch, FullBatchNet, HalfSquaredError, MLP,
                         SharpnessTracker)
from sklearn_eos import _callbacks
from sklearn_eos._base import BaseEoS, FitInterrupted
from sklearn_eos._net import SYNC_EVERY


@contextmanager
def _python_sigint():
    """Python's own SIGINT handler in the block, as in a terminal (a process started in the
    background may inherit SIGINT ignored, and a Ctrl-C would then never reach it)."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


STEPS = 256
READS = ("item", "tolist", "__float__", "__int__", "__index__", "__bool__", "numpy", "cpu", "__array__")
SETUP_READS = 4  # fit's input checks (``torch.isfinite(block).all()`` on X and y) and slack


@pytest.fixture(scope="module")
def digits():
    X, y = load_digits(return_X_y=True)
    return StandardScaler().fit_transform(X[:200]), y[:200]


@pytest.fixture
def host_reads(monkeypatch):
    """Counts host reads of tensors, split into those inside a sharpness measurement and
    the others (``counts['measuring']`` and ``counts['training']``). `DivergenceGuard` takes
    its GPU path (it reads each loss on the host only on the CPU, where that is free)."""
    monkeypatch.setattr(_callbacks, "_reads_on_host", lambda device: False)
    counts = collections.Counter()
    inside = []

    def counting(name):
        original = getattr(torch.Tensor, name)

        def read(self, *args, **kwargs):
            counts["measuring" if inside else "training"] += 1
            return original(self, *args, **kwargs)
        return read

    for name in READS:
        monkeypatch.setattr(torch.Tensor, name, counting(name))
    measure = SharpnessTracker.measure

    def counted_measure(self, net, step):
        counts["measurements"] += 1
        inside.append(step)
        try:
            return measure(self, net, step)
        finally:
            inside.pop()

    monkeypatch.setattr(SharpnessTracker, "measure", counted_measure)
    return counts


def _fit(data, **params):
    params = {"hidden_layer_sizes": (16,), "lr": 0.3, "max_iter": STEPS, "sharpness_every": 0,
              "random_state": 0, **params}
    return EoSClassifier(**params).fit(*data)


# -- the counter itself -----------------------------------------------------------------
def test_the_counter_sees_the_reads_of_a_loop_that_reads_every_step(host_reads):
    """Control: the wrapped methods are those a per-step loss read goes through."""
    loss = torch.tensor(0.5)
    for _ in range(10):
        float(loss)
        loss.item()
        bool(loss > 0)
    assert host_reads["training"] == 30


def test_a_loss_goal_reads_every_step(digits, host_reads):
    """Control on a fit: stopping at the very step that reaches the goal needs every loss."""
    est = _fit(digits, loss_goal=0.0)  # never reached: all STEPS steps run
    assert est.n_iter_ == STEPS
    assert host_reads["training"] >= STEPS


# -- the claims ---------------------------------------------------------------------------
def test_default_fit_reads_the_losses_once_every_sync_every_steps(digits, host_reads):
    est = _fit(digits)
    assert est.n_iter_ == STEPS and not est.diverged_
    assert host_reads["measurements"] == 0
    assert host_reads["training"] <= STEPS // SYNC_EVERY + SETUP_READS
    # the losses were read all the same
    assert all(isinstance(v, float) for v in est.loss_curve_.tolist()) and len(est.loss_curve_) == STEPS


def test_tracked_fit_reads_scale_with_measurements(digits, host_reads):
    every = 64
    _fit(digits, sharpness_every=every)
    n_measurements = STEPS // every + 1  # and one at the end
    assert host_reads["measurements"] == n_measurements
    assert host_reads["measuring"] > 0
    # one read before each measurement at most, besides the periodic ones
    assert host_reads["training"] <= STEPS // SYNC_EVERY + n_measurements + SETUP_READS


def test_step_decay_reads_every_step_only_while_it_waits_for_stability(digits, host_reads):
    est = _fit(digits, decay_time=100)
    assert est.decay_step_ is not None
    waiting = est.decay_step_ - 100 + 1  # steps whose next rate depended on the episodes
    assert host_reads["training"] <= STEPS // SYNC_EVERY + waiting + SETUP_READS


def test_instability_decay_reads_every_step_until_the_decay(digits, host_reads):
    est = _fit(digits, lr=1.2, decay_on="instabilities", decay_time=2)
    assert est.n_iter_ == STEPS and est.decay_step_ is not None
    decay = est.decay_step_
    assert decay < STEPS - 2 * SYNC_EVERY  # so that the bound below says something
    assert decay <= host_reads["training"] <= decay + (STEPS - decay) // SYNC_EVERY + 1 + SETUP_READS


# -- the results do not depend on when the losses are read ----------------------------
def _fitted(est):
    attrs = {k: v for k, v in vars(est).items() if k.endswith("_") and k not in ("net_", "module_")}
    rows = [dict(row) for row in est.net_.history]
    return attrs, {k: v.clone() for k, v in est.module_.state_dict().items()}, rows


def _assert_same(a, b):
    if isinstance(a, dict):
        assert a.keys() == b.keys()
        for k in a:
            _assert_same(a[k], b[k])
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b)
        for x, y in zip(a, b):
            _assert_same(x, y)
    elif isinstance(a, torch.Tensor):
        assert torch.equal(a, b)
    elif isinstance(a, (np.ndarray, float)):
        np.testing.assert_array_equal(a, b)
    else:
        assert a == b


def _regression():
    X, y = make_regression(n_samples=80, n_features=5, noise=0.1, random_state=0)
    return X, (y - y.mean()) / y.std()


FITS = {
    # edge of stability: episodes, a decay that waits for one to end, rotation across them
    "tracked": (EoSClassifier, dict(hidden_layer_sizes=(32, 32), lr=1.0, max_iter=200, sharpness_every=25,
                                    decay_time=170, random_state=0)),
    "instability_decay": (EoSClassifier, dict(hidden_layer_sizes=(32, 32), lr=1.0, max_iter=150,
                                              sharpness_every=0, decay_on="instabilities", decay_time=2,
                                              random_state=0)),
    # diverges at step 19: measurements at 0, 7, 14 and (restored) 18; none may see step 19+
    "diverged": (EoSRegressor, dict(hidden_layer_sizes=(8,), lr=3.0, max_iter=200, sharpness_every=7,
                                    random_state=0)),
    # the same divergence, and a decay due at step 20, which runs before the divergence is read
    "decay_after_divergence": (EoSRegressor, dict(hidden_layer_sizes=(8,), lr=3.0, max_iter=200,
                                                  sharpness_every=0, decay_time=20, decay_when_stable=False,
                                                  random_state=0)),
}


@pytest.mark.parametrize("sync_every", [3, SYNC_EVERY, 10_000])
@pytest.mark.parametrize("name", sorted(FITS))
def test_fitted_attributes_do_not_depend_on_sync_every(name, sync_every, digits, monkeypatch):
    Estimator, params = FITS[name]
    X, y = _regression() if Estimator is EoSRegressor else digits
    results = []
    for every in (1, sync_every):
        monkeypatch.setattr(BaseEoS, "_sync_every", every)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            results.append(_fitted(Estimator(**params).fit(X, y)))
    (attrs, state, rows), expected = results[1], results[0]
    if name == "diverged":
        assert attrs["diverged_"] and attrs["n_iter_"] == 19
    elif name == "decay_after_divergence":
        assert attrs["diverged_"] and attrs["n_iter_"] == 19 and attrs["decay_step_"] is None
    elif name == "tracked":
        assert attrs["decay_step_"] == 175 and attrs["n_instabilities_"] == 3  # it waited for one
    _assert_same(attrs, expected[0])
    _assert_same(state, expected[1])
    _assert_same(rows, expected[2])


@pytest.mark.parametrize("name", ["tracked", "diverged"])
def test_the_tracker_has_every_earlier_loss_read_before_each_measurement(name, digits, monkeypatch):
    """However rare the periodic reads, each measurement follows a read of every earlier
    step's loss (the tracker's ``needs_losses``): no measurement past a divergence, episodes
    paired with the measurements around them."""
    delivered, at_measurement = [], []

    class Delivered(Callback):
        def on_step_loss(self, net, step, loss, **kwargs):
            delivered.append(step)

    measure = SharpnessTracker.measure

    def spied_measure(self, net, step):
        at_measurement.append((step, delivered[-1] if delivered else -1))
        return measure(self, net, step)

    monkeypatch.setattr(SharpnessTracker, "measure", spied_measure)
    monkeypatch.setattr(BaseEoS, "_sync_every", 10_000)
    Estimator, params = FITS[name]
    X, y = _regression() if Estimator is EoSRegressor else digits
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        est = Estimator(**params, callbacks=[Delivered()]).fit(X, y)
    periodic = [(step, last) for step, last in at_measurement[:-1]]  # the last one is at the end
    assert len(periodic) >= 3
    assert all(last == step - 1 for step, last in periodic), periodic
    assert est.diverged_ == (name == "diverged")


# -- FullBatchNet's read protocol --------------------------------------------------------
class StepLosses(Callback):
    """Records each ``on_step_loss`` call and, in ``on_batch_end``, what the history held."""

    def __init__(self, stop_at=None):
        self.stop_at = stop_at

    def on_train_begin(self, net, **kwargs):
        self.seen, self.held = [], []

    def on_step_loss(self, net, step, loss, **kwargs):
        self.seen.append((step, loss, len(net.history)))
        if step == self.stop_at:
            raise KeyboardInterrupt

    def on_batch_end(self, net, training=False, **kwargs):
        self.held.append(net.history[-1]["batches"][-1]["train_loss"])


class BatchedStepLosses(StepLosses):
    """The same, taking the losses in the net's batched reads (it asks for no step)."""

    def needs_losses(self, net, step, **kwargs):
        return False


def _net(*callbacks, sync_every=4, max_epochs=10):
    X, y = make_regression(n_samples=40, n_features=3, random_state=0)
    data = FullBatch(torch.tensor(X, dtype=torch.float32), torch.tensor(y / y.std(), dtype=torch.float32))
    net = FullBatchNet(MLP, module__n_features_in=3, module__n_outputs=1, module__hidden_layer_sizes=(4,),
                       criterion=HalfSquaredError, optimizer=torch.optim.SGD, lr=0.01, max_epochs=max_epochs,
                       callbacks=list(callbacks), sync_every=sync_every)
    return net, data


def test_losses_are_read_every_sync_every_steps_and_replayed_in_order():
    recorder = BatchedStepLosses()
    net, data = _net(("recorder", recorder), sync_every=4, max_epochs=10)
    net.fit(data, None)
    losses = [row["batches"][0]["train_loss"] for row in net.history]
    assert all(isinstance(v, float) for v in losses) and len(losses) == 10
    # every step once, in order, with the value the history keeps; read after steps 3, 7 and
    # at the end (history lengths 4, 8, 10)
    assert [s for s, _, _ in recorder.seen] == list(range(10))
    assert [v for _, v, _ in recorder.seen] == losses
    assert [n for _, _, n in recorder.seen] == [4] * 4 + [8] * 4 + [10] * 2
    # between reads the history holds the 0-d loss tensor; right after a read, floats
    assert [isinstance(v, float) for v in recorder.held] == [(t + 1) % 4 == 0 for t in range(10)]
    assert all(isinstance(v, torch.Tensor) and v.ndim == 0
               for i, v in enumerate(recorder.held) if (i + 1) % 4)


def test_a_stop_from_a_batched_on_step_loss_drops_the_steps_run_past_it():
    stopper, after = BatchedStepLosses(stop_at=5), BatchedStepLosses()
    net, data = _net(("stopper", stopper), ("after", after), sync_every=8, max_epochs=20)
    net.fit(data, None)
    # steps 6 and 7 ran before the read after step 7; their rows are dropped, nobody saw them
    assert [s for s, _, _ in stopper.seen] == list(range(6))
    assert [s for s, _, _ in after.seen] == list(range(5))
    assert len(stopper.held) == 7  # steps 0-6 ended; 6 and 7 updated the parameters
    assert len(net.history) == 6
    assert "train_batch_count" not in net.history[-1] and "train_batch_count" in net.history[-2]


def test_a_callback_that_asks_nothing_gets_every_step_and_stops_at_that_step():
    """A callback with on_step_loss but no needs_losses may stop at any step's loss: the net
    reads every step for it, so that no step runs past the stop whatever sync_every is (a
    user's stop used to leave later steps' updates in place, and the fitted model depended
    on sync_every)."""
    stopper = StepLosses(stop_at=5)
    torch.manual_seed(0)
    net, data = _net(("stopper", stopper), sync_every=8, max_epochs=20)
    net.fit(data, None)
    assert [s for s, _, _ in stopper.seen] == list(range(6))
    assert [n for _, _, n in stopper.seen] == list(range(1, 7))  # read right after each step
    assert len(stopper.held) == 5 and len(net.history) == 6  # the read came before step 5 ended
    torch.manual_seed(0)
    twin, _ = _net(sync_every=8, max_epochs=6)  # the same start and 6 updates, then max_epochs
    twin.fit(data, None)
    for a, b in zip(net.module_.parameters(), twin.module_.parameters()):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_callbacks_can_ask_for_a_read_after_any_step():
    class AskAt(StepLosses):
        def needs_losses(self, net, step, **kwargs):
            return step == 2

    recorder = AskAt()
    net, data = _net(("recorder", recorder), sync_every=100, max_epochs=6)
    net.fit(data, None)
    assert [n for _, _, n in recorder.seen] == [3] * 3 + [6] * 3


def test_per_step_hooks_reach_every_callback_that_defines_them():
    """The net calls a per-step hook only on callbacks that override skorch's no-op; a
    callback that defines one, on its class or on the instance, is called every step."""
    class Hooks(Callback):
        def on_train_begin(self, net, **kwargs):
            self.calls = collections.Counter()

        def on_epoch_begin(self, net, **kwargs):
            self.calls["on_epoch_begin"] += 1

        def on_batch_begin(self, net, **kwargs):
            self.calls["on_batch_begin"] += 1

        def on_batch_end(self, net, **kwargs):
            self.calls["on_batch_end"] += 1

        def on_epoch_end(self, net, **kwargs):
            self.calls["on_epoch_end"] += 1

    hooks, plain = Hooks(), Callback()
    ends = []
    plain.on_epoch_end = lambda net, **kwargs: ends.append(len(net.history))
    net, data = _net(("hooks", hooks), ("plain", plain), max_epochs=7)
    net.fit(data, None)
    assert hooks.calls == {name: 7 for name in
                           ("on_epoch_begin", "on_batch_begin", "on_batch_end", "on_epoch_end")}
    assert ends == list(range(1, 8))


@pytest.mark.parametrize("sync_every", [0, 2.0, True, None])
def test_sync_every_must_be_a_positive_int(sync_every):
    """0, a float, None and a bool are refused (a bool is an Integral: sync_every=True was
    taken as a read every step; API audit)."""
    net = FullBatchNet(MLP(2, 1, ()), criterion=HalfSquaredError, max_epochs=1, sync_every=sync_every)
    with pytest.raises(ValueError, match="sync_every must be an int >= 1"):
        net.fit(FullBatch(torch.randn(4, 2), torch.randn(4, 1)))


class _EndsWith(Callback):
    """Records that its ``on_train_end`` ran; raises KeyboardInterrupt there with ``interrupt``."""

    def __init__(self, interrupt=False):
        self.interrupt = interrupt

    def on_train_end(self, net, **kwargs):
        self.ended = True
        if self.interrupt:
            raise KeyboardInterrupt("from on_train_end")


def test_a_keyboard_interrupt_in_on_train_end_reaches_the_caller_after_every_callback_ended():
    """skorch calls on_train_end outside its try: a Ctrl-C in one callback's (the tracker's
    final measurement) skipped every callback after it, whose histories were never built."""
    first, interrupting, last = _EndsWith(), _EndsWith(interrupt=True), _EndsWith()
    tracker = SharpnessTracker(every=2, k=1)
    net, data = _net(("first", first), ("interrupting", interrupting), ("tracker", tracker), ("last", last),
                     max_epochs=5)
    with pytest.raises(KeyboardInterrupt, match="from on_train_end"):
        net.fit(data, None)
    assert first.ended and interrupting.ended and last.ended and net.train_ended_
    np.testing.assert_array_equal(tracker.history_["step"], [0, 2, 4, 5])  # its final one too
    assert all(isinstance(row["batches"][0]["train_loss"], float) for row in net.history)


class _ScriptedLoss(torch.nn.Module):
    """A float32 loss that reads 1.0, then 0.9999 at every later step."""

    def __init__(self):
        super().__init__()
        self.calls = 0

    def forward(self, y_pred, y):
        value = 1.0 if self.calls == 0 else 0.9999
        self.calls += 1
        return y_pred.sum() * 0 + torch.tensor(value, dtype=torch.float32)


@pytest.mark.parametrize("sync_every", [1, 32])
def test_skorch_callbacks_read_floats_from_the_history_whatever_sync_every(sync_every):
    """skorch's EarlyStopping compared the 0-d float32 loss of a step not read yet with its
    threshold best * (1 - 1e-4), rounded to float32 by the comparison: 0.9999 after 1.0 was
    no improvement, and it stopped after 2 epochs with sync_every=32 but 3 with 1 (FullBatchNet
    audit, hN/bug_08). As on a plain skorch net, it now reads floats."""
    from skorch.callbacks import EarlyStopping

    seen = []

    class Reader(Callback):
        def on_epoch_end(self, net, **kwargs):
            seen.append(net.history[-1, "train_loss"])

    X, y = torch.randn(20, 3), torch.zeros(20, 1)
    net = FullBatchNet(torch.nn.Linear(3, 1), criterion=_ScriptedLoss, optimizer=torch.optim.SGD, lr=0.01,
                       max_epochs=6, sync_every=sync_every,
                       callbacks=[EarlyStopping(monitor="train_loss", patience=1, sink=lambda *a: None),
                                  Reader()])
    net.fit(FullBatch(X, y), None)
    assert all(type(v) is float for v in seen)
    assert len(net.history) == 3  # 1.0, 0.9999 (1e-4 below as floats), 0.9999 (no change): stop


class _FailAtStep4(Callback):
    def on_epoch_begin(self, net, **kwargs):
        if len(net.history) == 4:
            raise RuntimeError("a failure in the middle of the fit")


def test_a_fit_that_raises_leaves_no_training_set_or_copies_in_the_callbacks():
    """Optimizer audit (hU/bug_10): skorch skips on_train_end after an error, and the tracker
    kept the training set (a pickled net grew by the size of X and y), its history_ that of
    the fit before, and the guard and UpdateCurvature their copies of the parameters."""
    import pickle

    from sklearn_eos import DivergenceGuard, UpdateCurvature

    g = torch.Generator().manual_seed(0)
    data = FullBatch(torch.randn(2000, 20, generator=g), torch.randn(2000, 2, generator=g))
    tracker, guard, curvature = SharpnessTracker(every=2, k=1), DivergenceGuard(), UpdateCurvature()
    net = FullBatchNet(MLP(20, 2, (4,)), criterion=HalfSquaredError, optimizer=torch.optim.SGD, lr=0.1,
                       max_epochs=6, callbacks=[("guard", guard), ("sharpness", tracker), ("uc", curvature)])
    net.fit(data, None)
    size = len(pickle.dumps(net))
    net.callbacks.append(("fail", _FailAtStep4()))
    with pytest.raises(RuntimeError, match="in the middle of the fit"):
        net.initialize().fit(data, None)
    assert len(pickle.dumps(net)) < size + 10_000  # X and y alone are 168,000 bytes
    np.testing.assert_array_equal(tracker.history_["step"], [0, 2])  # this call's measurements
    assert len(curvature.curvatures_) == 2  # steps 0-2 ran: c_0, c_1
    assert guard._params is None and tracker._data is None


class _FailsAtEnd(Callback):
    def on_train_end(self, net, **kwargs):
        raise ValueError("a callback's bug")


def _kept(net):
    """The per-fit copies still held by the package's callbacks of ``net``."""
    callbacks = dict(net.callbacks_)
    return {name: attr for name, attr in [("tracker", "_data"), ("uc", "_grads"), ("guard", "_last_finite")]
            if name in callbacks and getattr(callbacks[name], attr, None) is not None}


def test_an_error_in_on_train_begin_or_on_train_end_leaves_no_copies_either():
    """Review of the fix above (hR/bug_03): skorch runs on_train_begin and on_train_end outside
    fit_loop, so an error there (a callback's bug; LRSchedule refusing decay_on='instabilities'
    without an InstabilityTracker, after the guard had copied the parameters) left the
    training set and the copies in the callbacks."""
    from sklearn_eos import DivergenceGuard, LRSchedule, UpdateCurvature

    data = FullBatch(torch.randn(200, 3), torch.randn(200, 2))
    net = FullBatchNet(MLP(3, 2, (4,)), criterion=HalfSquaredError, lr=0.1, max_epochs=3,
                       callbacks=[("fails", _FailsAtEnd()), ("tracker", SharpnessTracker(every=2)),
                                  ("uc", UpdateCurvature()), ("guard", DivergenceGuard())])
    with pytest.raises(ValueError, match="a callback's bug"):
        net.fit(data, None)
    assert _kept(net) == {} and not net.train_ended_
    schedule = LRSchedule(0.1, decay_on="instabilities", decay_time=5)
    net = FullBatchNet(MLP(3, 2, (4,)), criterion=HalfSquaredError, lr=0.1, max_epochs=3,
                       callbacks=[("guard", DivergenceGuard()), ("uc", UpdateCurvature()),
                                  ("schedule", schedule)])
    with pytest.raises(ValueError, match="needs an InstabilityTracker"):
        net.fit(data, None)
    assert _kept(net) == {}


def test_a_ctrl_c_during_the_last_loss_read_keeps_nothing_of_the_fit(monkeypatch):
    """Review of the fix above (hR/bug_04): an interrupt in the net's own on_train_end, while
    it reads the pending losses (on a GPU, the wait for up to sync_every queued steps), was
    taken for one in a later callback: the estimator kept a model with n_iter_ 0 after 30 steps
    and tensors in its history, and a divergence among those steps went unseen. The read now
    keeps the pending steps until written, and such an interrupt fails the fit: the estimator
    stays as it was, as before the fix."""
    original_end, original_write = FullBatchNet.on_train_end, FullBatchNet._write_losses
    in_end = [False]

    def on_train_end(self, net, **kwargs):
        in_end[0] = True
        try:
            return original_end(self, net, **kwargs)
        finally:
            in_end[0] = False

    def interrupted_write(self, pending):
        if in_end[0] and pending:
            in_end[0] = False
            signal.raise_signal(signal.SIGINT)  # the user's Ctrl-C while the read waits
        return original_write(self, pending)

    monkeypatch.setattr(FullBatchNet, "on_train_end", on_train_end)
    monkeypatch.setattr(FullBatchNet, "_write_losses", interrupted_write)
    X, y = make_regression(40, 4, random_state=0)
    est = EoSRegressor(hidden_layer_sizes=(), lr=0.05, max_iter=30, sharpness_every=0, random_state=0)
    with _python_sigint():
        with pytest.raises(KeyboardInterrupt) as raised:
            est.fit(X, y / y.std())
    assert not isinstance(raised.value, FitInterrupted) and not hasattr(est, "n_iter_")  # as it was
    # on a bare net the losses stay pending, not lost: a later read (here the pickle) has them
    net = FullBatchNet(MLP(3, 1, ()), criterion=HalfSquaredError, lr=0.01, max_epochs=5, sync_every=100)
    in_end[0] = False
    with _python_sigint():
        with pytest.raises(KeyboardInterrupt):
            net.fit(FullBatch(torch.randn(20, 3), torch.randn(20, 1)), None)
    assert len(net._pending) == 5
    net.__getstate__()
    assert all(isinstance(row["train_loss"], float) for row in net.history)


class _CtrlCInReplay(Callback):
    """Listens to every step's loss, never stops training, and sends this process a real
    SIGINT (a Ctrl-C) while it is given step ``at``'s loss, inside a batched read's replay."""

    def __init__(self, at):
        self.at = at

    def needs_losses(self, net, step, **kwargs):
        return False  # read in batches, every sync_every steps and at the end

    def on_step_loss(self, net, step, loss, **kwargs):
        if step == self.at:
            signal.raise_signal(signal.SIGINT)


# steps 0-7 are read after step 7, steps 24-29 at the end of the fit
@pytest.mark.parametrize("at, n_steps", [(2, 8), (26, 30)])
def test_a_ctrl_c_during_a_batched_replay_ends_the_fit_after_the_steps_read(at, n_steps):
    """A Ctrl-C that landed in a callback's on_step_loss during a batched replay came out of
    that callback as its stop at that step: the history (and n_iter_, loss_curve_) was cut
    there while the parameters kept the updates of the later steps read in the same batch, so
    the model was not that of the steps reported; at the last read the fit was lost. The
    interrupt is now held back until the replay has run whole: the fit ends at the read, with
    every step it ran, as a Ctrl-C during a step ends it."""
    X, y = make_regression(40, 4, random_state=0)
    y = y / y.std()
    est = EoSRegressor(hidden_layer_sizes=(5,), lr=0.05, max_iter=30, sharpness_every=0, random_state=0,
                       callbacks=[("ctrl_c", _CtrlCInReplay(at=at))])
    est._sync_every = 8
    with _python_sigint():
        with pytest.raises(FitInterrupted, match=f"after {n_steps} steps"):
            est.fit(X, y)
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    reference = EoSRegressor(hidden_layer_sizes=(5,), lr=0.05, max_iter=n_steps, sharpness_every=0,
                             random_state=0).fit(X, y)
    assert est.n_iter_ == n_steps and len(est.loss_curve_) == n_steps
    np.testing.assert_array_equal(est.loss_curve_, reference.loss_curve_)
    np.testing.assert_array_equal(est.predict(X), reference.predict(X))  # the model of those steps
    # a bare net: every step's row is kept and read, every hook has run
    net = FullBatchNet(MLP(3, 1, ()), criterion=HalfSquaredError, lr=0.01, max_epochs=5, sync_every=100,
                       callbacks=[("ctrl_c", _CtrlCInReplay(at=1))])
    with _python_sigint():
        with pytest.raises(KeyboardInterrupt):
            net.fit(FullBatch(torch.randn(20, 3), torch.randn(20, 1)), None)
    assert net.train_ended_ and len(net.history) == 5
    assert all(isinstance(row["train_loss"], float) for row in net.history)
