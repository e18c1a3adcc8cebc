"""Grid searches on Dask: joblib's ``'dask'`` backend over a real multi-process cluster.

A `distributed.LocalCluster` with two *process* workers stands in for a real cluster: every
fit is pickled to another Python process, run there, and its result pickled back, which is
exactly what happens on a remote cluster (only the network differs). Expected values come
from the same search run in this process with ``n_jobs=1``.
"""

import copy
import os

import joblib
import numpy as np
import pytest
from sklearn.base import clone
from sklearn.datasets import load_digits
from sklearn.model_selection import GridSearchCV
from sklearn.preprocessing import StandardScaler

from sklearn_eos import EoSClassifier

distributed = pytest.importorskip("distributed")


@pytest.fixture(scope="module")
def client():
    cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                       dashboard_address=None)
    client = distributed.Client(cluster)
    try:
        yield client
    finally:
        client.close()
        cluster.close()


@pytest.fixture(scope="module")
def digits():
    X, y = load_digits(return_X_y=True)
    X, y = X[:240], y[:240]
    return StandardScaler().fit_transform(X), y


def _estimator():
    return EoSClassifier(hidden_layer_sizes=(16,), max_iter=30, sharpness_every=10, random_state=0)


GRID = {"lr": [0.1, 0.5], "decay_time": [None, 0.5]}


def _assert_same_fit(a, b):
    np.testing.assert_array_equal(a.loss_curve_, b.loss_curve_)
    np.testing.assert_array_equal(a.lr_history_, b.lr_history_)
    assert a.n_iter_ == b.n_iter_ and a.diverged_ == b.diverged_
    for name in ("sharpness_history_", "rotation_history_"):
        ha, hb = getattr(a, name), getattr(b, name)
        assert list(ha) == list(hb)
        for column in ha:
            np.testing.assert_array_equal(ha[column], hb[column], err_msg=f"{name}[{column!r}]")


def test_workers_are_other_processes(client):
    pids = set(client.run(os.getpid).values())
    assert len(pids) == 2 and os.getpid() not in pids


def test_grid_search_on_dask_equals_sequential_search(client, digits):
    X, y = digits
    # workers that kept the results of an earlier search of the same fits (on this module's
    # client) answer from memory, and fewer tasks than fits run: start from empty workers
    client.restart()
    sequential = GridSearchCV(_estimator(), GRID, cv=2, n_jobs=1).fit(X, y)
    # the task stream: what the workers ran (joblib falls back to running every fit in this
    # process when it sees a single worker core, and the results would be the same)
    with joblib.parallel_backend("dask"), distributed.get_task_stream(client) as tasks:
        on_dask = GridSearchCV(_estimator(), GRID, cv=2).fit(X, y)
    workers = {task["worker"] for task in tasks.data}
    assert len(tasks.data) >= 8 and len(workers) == 2  # 4 candidates x 2 folds, on both workers
    assert on_dask.cv_results_["params"] == sequential.cv_results_["params"]
    for key in ("mean_test_score", "split0_test_score", "split1_test_score", "rank_test_score"):
        np.testing.assert_array_equal(on_dask.cv_results_[key], sequential.cv_results_[key],
                                      err_msg=key)
    assert on_dask.best_params_ == sequential.best_params_
    _assert_same_fit(on_dask.best_estimator_, sequential.best_estimator_)
    # a control: the grid's candidates really are different models
    assert len(set(sequential.cv_results_["mean_test_score"])) > 1


def test_fitted_estimator_travels_between_processes_intact(client, digits):
    X, y = digits
    local = clone(_estimator()).set_params(lr=0.5).fit(X, y)
    assert len(local.sharpness_history_["step"]) == 4 and len(local.rotation_history_["step"]) == 3

    # fitted here, shipped to a worker and back
    round_trip = client.submit(copy.deepcopy, local, pure=False).result()
    # fitted on a worker from the unfitted estimator, shipped back
    remote = client.submit(clone(local).fit, X, y, pure=False).result()

    for other in (round_trip, remote):
        assert other is not local
        _assert_same_fit(other, local)
        np.testing.assert_array_equal(other.predict(X), local.predict(X))
        np.testing.assert_array_equal(other.predict_proba(X), local.predict_proba(X))
