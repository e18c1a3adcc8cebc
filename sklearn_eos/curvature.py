"""The curvature engine: exact Hessian products of a full training loss, their top
eigenpairs, and how eigenvectors rotate between two measurements.

These are the pure building blocks that `SharpnessTracker` (and so the estimators'
``sharpness_history_`` and ``rotation_history_``) is made of, for use on any
``torch.nn.Module`` outside a fit:

* `FullBatchHessian`: the Hessian of ``loss_fn`` averaged over every training example, with
  respect to the trainable parameters, as a linear operator (``matmat``); never formed.
* `top_eigenpairs`: its largest algebraic eigenpairs (and optionally the most negative one)
  from a warm-start block, to a relative tolerance, counting the products it used.
* `eigenvector_cosines`, `subspace_overlap`, `principal_angles`: rotation metrics between two
  sets of eigenvectors that are invariant to sign flips (and, for the subspace metrics, to
  reordering inside near-degenerate clusters).
* `MatrixOperator`: an explicit symmetric matrix with the operator interface, for checks.

A solve raises `NonFiniteProductError` (a `numpy.linalg.LinAlgError`) when the operator's
products are not finite, as a Hessian's are at parameters next to a divergence.

Conventions: vectors are flat, in the order of ``params`` (default: the module's parameters
with ``requires_grad``), in the parameters' dtype and device. Eigenvalues are float64 numpy
arrays in descending order; eigenvectors are torch tensors of shape (dim, k).

Example: the sharpness of a model at its current parameters, in chunks of 500 rows::

    from sklearn_eos.curvature import FullBatchHessian, top_eigenpairs

    chunks = list(zip(X.split(500), y.split(500)))
    with FullBatchHessian(model, torch.nn.functional.cross_entropy, chunks) as H:
        result = top_eigenpairs(H, k=3, tol=1e-3)
    result.eigenvalues[0], result.n_products
"""

from ._eigensolver import EigenResult, MatrixOperator, NonFiniteProductError, resolvable_tol, top_eigenpairs
from ._hvp import FullBatchHessian
from ._rotation import eigenvector_cosines, principal_angles, subspace_overlap

__all__ = [
    "FullBatchHessian",
    "MatrixOperator",
    "top_eigenpairs",
    "EigenResult",
    "NonFiniteProductError",
    "resolvable_tol",
    "eigenvector_cosines",
    "subspace_overlap",
    "principal_angles",
]
