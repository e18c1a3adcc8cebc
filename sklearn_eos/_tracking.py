"""Sharpness and eigenvector-rotation tracking as a skorch callback.

The callback wires the pure curvature code together: `FullBatchHessian` (exact HVPs of the
loss the net minimises, over the whole training set), `top_eigenpairs` (block Krylov,
warm-started from the previous measurement's top-k block, which is what makes tracking cheap
at the edge of stability, where the top eigenvalues are nearly degenerate and single vectors
swap places) and the rotation metrics.
"""

import numpy as np
import torch
from skorch.callbacks import Callback

from ._callbacks import DivergenceGuard
from ._eigensolver import top_eigenpairs
from ._hvp import FullBatchHessian
from ._net import FullBatch
from ._rotation import eigenvector_cosines, subspace_overlap


def sharpness_columns(k, compute_min=False):
    """Column names of a sharpness history with ``k`` eigenvalues."""
    cols = ["step", "sharpness", *[f"eig_{i}" for i in range(2, k + 1)], "threshold", "lr"]
    if compute_min:
        cols.append("eig_min")
    return cols + ["above_threshold", "n_hvps", "converged"]


def rotation_columns(k):
    """Column names of a rotation history with ``k`` eigenvectors."""
    return ["step", "prev_step", "cosine", *[f"cosine_{i}" for i in range(2, k + 1)], "subspace_overlap"]


def _as_arrays(rows, columns):
    """A list of row dicts as a dict of equal-length 1-D numpy arrays (DataFrame-ready)."""
    return {c: np.array([row[c] for row in rows]) if rows else np.array([]) for c in columns}


class SharpnessTracker(Callback):
    """Record the top Hessian eigenvalues of the full training loss during training.

    Works with any skorch net fitted on a `FullBatch` (one GD step per epoch). The Hessian is
    that of the loss the net minimises (``net.criterion_`` over every training example, in
    train mode, as the gradient step sees it). A measurement is taken before step ``t``'s
    update whenever ``t % every == 0``, and once more at the end of training, on the
    parameters that fit returns.

    Parameters
    ----------
    every : int, default=100
        Steps between measurements.
    k : int, default=3
        Number of top eigenpairs. Use ``k >= 2``: near the edge of stability the top
        eigenvalues are nearly degenerate, and only a block warm start stays cheap.
    tol : float, default=1e-3
        Relative accuracy of the sharpness (the top eigenvalue).
    rest_tol : float or None, default=0.1
        Relative accuracy of eigenvalues 2..k (None: ``tol``). Resolving the whole
        near-degenerate top cluster to 1e-3 costs about three times as many HVPs as the
        sharpness alone; the looser block is still a good warm start and rotation basis.
    compute_min : bool, default=False
        Also the most negative eigenvalue (column ``'eig_min'``).
    max_products : int, default=300
        HVP budget of one measurement.
    random_state : int or None
        Seed of the random start vectors.

    Attributes
    ----------
    history_ : dict of 1-D arrays
        One row per measurement: 'step', 'sharpness' (lambda_1), 'eig_2'...'eig_k',
        'threshold' (2 / the learning rate of that step), 'lr', ['eig_min'],
        'above_threshold', 'n_hvps' (Hessian-vector products used), 'converged'.
    rotation_history_ : dict of 1-D arrays
        One row per pair of consecutive measurements: 'step', 'prev_step', 'cosine'
        (|cos| between the two top eigenvectors), 'cosine_2'...'cosine_k', 'subspace_overlap'
        (||U^T V||_F^2 / k of the top-k subspaces).
    eigenvectors_ : torch.Tensor of shape (n_params, k)
        Top eigenvectors of the last measurement.
    """

    def __init__(self, every=100, k=3, tol=1e-3, rest_tol=1e-1, compute_min=False, max_products=300,
                 random_state=None):
        self.every = every
        self.k = k
        self.tol = tol
        self.rest_tol = rest_tol
        self.compute_min = compute_min
        self.max_products = max_products
        self.random_state = random_state

    def on_train_begin(self, net, X=None, **kwargs):
        if not isinstance(X, FullBatch):
            raise TypeError("SharpnessTracker needs a net fitted on a FullBatch (full-batch GD).")
        self._data = X
        self._rows, self._rotation_rows = [], []
        self._min_vector = None
        self.eigenvectors_ = None
        self.step_ = 0
        seed = self.random_state if self.random_state is not None else np.random.randint(2**31)
        self._generator = torch.Generator().manual_seed(int(seed))

    @property
    def latest(self):
        """The last measurement as a dict (None before the first one)."""
        rows = getattr(self, "_rows", None)
        return rows[-1] if rows else None

    def _lr(self, net):
        return float(net.optimizer_.param_groups[0]["lr"])

    def measure(self, net, step):
        """Measure the spectrum at the net's current parameters and record it as ``step``."""
        with FullBatchHessian(net.module_, net.criterion_, self._data.chunks) as hessian:
            result = top_eigenpairs(
                hessian, self.k, start=self.eigenvectors_, tol=self.tol, rest_tol=self.rest_tol,
                max_products=self.max_products, compute_min=self.compute_min,
                min_start=self._min_vector, generator=self._generator,
            )
        lr = self._lr(net)
        eigs = result.eigenvalues
        row = {"step": step, "sharpness": float(eigs[0]), "threshold": 2.0 / lr, "lr": lr,
               "n_hvps": result.n_products, "converged": bool(result.converged)}
        row.update({f"eig_{i}": float(eigs[i - 1]) for i in range(2, self.k + 1)})
        row["above_threshold"] = row["sharpness"] > row["threshold"]
        if self.compute_min:
            row["eig_min"] = result.min_eigenvalue
            self._min_vector = result.min_eigenvector
        U = result.eigenvectors
        if self.eigenvectors_ is not None:
            cosines = eigenvector_cosines(self.eigenvectors_, U)
            rotation = {"step": step, "prev_step": self._rows[-1]["step"], "cosine": float(cosines[0]),
                        "subspace_overlap": float(subspace_overlap(self.eigenvectors_, U))}
            rotation.update({f"cosine_{i}": float(cosines[i - 1]) for i in range(2, self.k + 1)})
            self._rotation_rows.append(rotation)
        self.eigenvectors_ = U
        self._rows.append(row)
        return row

    def on_epoch_begin(self, net, **kwargs):
        # runs after LRSchedule's on_epoch_begin (callback order), so the lr is this step's
        if self.every and self.step_ % self.every == 0:
            self.measure(net, self.step_)
        self.step_ += 1

    def _final_step(self, net):
        """Number of updates applied to the parameters that fit returns."""
        for _, cb in net.callbacks_:
            if isinstance(cb, DivergenceGuard) and cb.diverged_:
                return max(cb.n_finite_steps_ - 1, 0)
        return self.step_

    def on_train_end(self, net, **kwargs):
        final = self._final_step(net)
        # after a divergence, measurements at or beyond the restored step saw bad parameters
        if self._rows and self._rows[-1]["step"] >= final:
            self._rows = [r for r in self._rows if r["step"] < final]
            self._rotation_rows = [r for r in self._rotation_rows if r["step"] < final]
            self.eigenvectors_ = None  # the kept measurements' vectors are gone: no warm start
        self.measure(net, final)
        k = self.k
        self.history_ = _as_arrays(self._rows, sharpness_columns(k, self.compute_min))
        self.rotation_history_ = _as_arrays(self._rotation_rows, rotation_columns(k))
        self._data = None  # the fitted net must not carry the training set
        self._rows = self._rotation_rows = None
