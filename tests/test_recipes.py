"""Recipes that the documentation gives, run as written (small data, few steps).

The user guide's recipe for divergence in a search: `GridSearchCV` keeps only the best
estimator, and a diverged candidate does not necessarily score badly (its model is the last
finite step's), so a second scorer records ``diverged_`` for every candidate and fold.
"""

import warnings

import numpy as np
import pandas as pd
from sklearn.datasets import load_breast_cancer
from sklearn.exceptions import ConvergenceWarning
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from sklearn_eos import EoSClassifier


def test_grid_search_records_which_candidates_diverged():
    X, y = load_breast_cancer(return_X_y=True)
    X, y = X[:150], y[:150]
    model = make_pipeline(StandardScaler(),
                          EoSClassifier(hidden_layer_sizes=(16,), lr_units="threshold", max_iter=30,
                                        sharpness_every=0, random_state=0))
    search = GridSearchCV(
        model, {"eosclassifier__lr": [0.5, 1.0, 20.0]}, cv=3,
        scoring={"accuracy": "accuracy", "diverged": lambda est, X, y: float(est[-1].diverged_)},
        refit="accuracy",
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)  # the diverged fits warn; the column says it
        search.fit(X, y)
    results = pd.DataFrame(search.cv_results_)
    diverged = dict(zip(results["param_eosclassifier__lr"], results["mean_test_diverged"]))
    assert diverged == {0.5: 0.0, 1.0: 0.0, 20.0: 1.0}
    # the diverged candidate still has a finite score: ranking alone does not reveal it
    assert np.isfinite(results["mean_test_accuracy"]).all()
    assert search.best_params_["eosclassifier__lr"] != 20.0
    assert not search.best_estimator_[-1].diverged_
