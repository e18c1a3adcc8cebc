"""scikit-learn's estimator contract, run on every public estimator with no expected failures."""

from sklearn.utils.estimator_checks import parametrize_with_checks

from sklearn_eos import EoSClassifier, EoSRegressor


@parametrize_with_checks([EoSClassifier(), EoSRegressor()])
def test_sklearn_contract(estimator, check):
    check(estimator)
