"""The public API's numpydoc sections against the signatures, as scikit-learn's own
``test_docstring_parameters`` checks its estimators (numpydoc's validator).

Everywhere: no documented parameter that the signature lacks (PR02: what a rename leaves
behind). The estimators, whose parameters users look up most: every parameter documented,
with a description (PR01, PR07). `EoSRegressor`'s docstring refers to `EoSClassifier`'s for
its parameters, by design.
"""

import inspect

import pytest

import sklearn_eos
import sklearn_eos.curvature

numpydoc_validate = pytest.importorskip("numpydoc.validate")


def _public_names():
    names = []
    for module in (sklearn_eos, sklearn_eos.curvature):
        for name in module.__all__:
            obj = getattr(module, name)
            if inspect.ismodule(obj):
                continue
            names.append(f"{module.__name__}.{name}")
            if inspect.isclass(obj):
                names += [f"{module.__name__}.{name}.{member}" for member, value in vars(obj).items()
                          if not member.startswith("_")
                          and (inspect.isfunction(value) or isinstance(value, (classmethod, staticmethod)))]
    return names


ESTIMATOR_API = (["sklearn_eos.EoSClassifier"]
                 + [f"sklearn_eos.{cls}.{method}" for cls in ("EoSClassifier", "EoSRegressor")
                    for method in ("fit", "predict", "measure_sharpness")]
                 + [f"sklearn_eos.EoSClassifier.{m}" for m in ("predict_proba", "predict_log_proba")])


def _errors(name, codes):
    return [f"{code} {message}" for code, message in numpydoc_validate.validate(name)["errors"]
            if code in codes]


def test_the_checks_below_cover_the_public_api():
    # the classes and functions of both public modules and the methods each class defines
    assert len(_public_names()) > 50
    assert "sklearn_eos.curvature.top_eigenpairs" in _public_names()


@pytest.mark.parametrize("name", _public_names())
def test_no_docstring_documents_a_parameter_that_the_signature_lacks(name):
    assert _errors(name, {"PR02"}) == []


@pytest.mark.parametrize("name", ESTIMATOR_API)
def test_the_estimators_document_every_parameter(name):
    assert _errors(name, {"PR01", "PR07"}) == []
