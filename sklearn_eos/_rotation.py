"""Rotation of Hessian eigenvectors between two measurements.

Eigenvectors have arbitrary signs and, near the edge of stability, nearly degenerate eigenvalues
whose vectors swap order; hence per-vector numbers take absolute values and subspace numbers
(overlap, principal angles) are invariant to any rotation inside the subspace.
All functions accept numpy arrays or torch tensors (any device) of shape (dim, k) with
orthonormal columns, and return numpy float64 values.
"""

import numpy as np
from scipy.linalg import subspace_angles

__all__ = ["eigenvector_cosines", "subspace_overlap", "principal_angles"]


def _as_numpy(U):
    """(dim, k) float64 numpy array from a numpy array or a torch tensor; 1-D means k = 1."""
    if hasattr(U, "detach"):
        U = U.detach().cpu().double().numpy()
    U = np.asarray(U, dtype=np.float64)
    U = U.reshape(U.shape[0], -1)
    if U.shape[1] > U.shape[0]:
        # more orthonormal columns than dimensions is impossible: a (k, dim) block, transposed
        raise ValueError(f"expected a (dim, k) block of orthonormal columns, got shape {U.shape}: "
                         f"more columns than rows (a transposed block?)")
    return U


def _cross(U, V):
    """``U^T V`` as float64, after checking the shapes agree."""
    U, V = _as_numpy(U), _as_numpy(V)
    if U.shape[0] != V.shape[0]:
        raise ValueError(f"dimension mismatch: {U.shape[0]} vs {V.shape[0]}")
    return U.T @ V


def eigenvector_cosines(U, V):
    """Per-eigenvector alignment ``|<u_i, v_i>|`` (sign-invariant).

    Parameters
    ----------
    U, V : array-like of shape (dim, k)
        Unit eigenvectors, column ``i`` of each describing the ``i``-th eigenvalue.

    Returns
    -------
    np.ndarray of shape (k,)
        Absolute cosines in [0, 1]; 1 = same direction, 0 = orthogonal.
    """
    C = _cross(U, V)
    if C.shape[0] != C.shape[1]:
        raise ValueError("U and V must have the same number of columns")
    return np.clip(np.abs(np.diag(C)), 0.0, 1.0)


def subspace_overlap(U, V):
    """Overlap ``||U^T V||_F^2 / k`` of two k-dimensional subspaces.

    Parameters
    ----------
    U, V : array-like of shape (dim, k) and (dim, l)
        Orthonormal bases, usually of the same width.

    Returns
    -------
    float
        In [0, 1]: 1 = same subspace, 0 = orthogonal subspaces; the mean squared cosine of the
        principal angles. Invariant to rotations, sign flips and reordering inside each basis.
        For widths ``k != l`` the sum is divided by ``max(k, l)``, so that 1 still means the
        same subspace: a 2-dimensional subspace inside a 3-dimensional one scores 2/3.
    """
    C = _cross(U, V)
    k = max(C.shape)
    return float(np.clip(np.sum(C * C) / k, 0.0, 1.0))


def principal_angles(U, V):
    """Principal angles between the subspaces spanned by ``U`` and ``V``.

    Parameters
    ----------
    U, V : array-like of shape (dim, k) and (dim, l)
        Orthonormal bases.

    Returns
    -------
    np.ndarray of shape (min(k, l),)
        Angles in radians, ascending in [0, pi/2]: `scipy.linalg.subspace_angles`, which
        takes small angles from sines (the arccos of the cosines loses half the digits there:
        a float32 subspace against itself gave 1e-4 rad).
    """
    U, V = _as_numpy(U), _as_numpy(V)
    if U.shape[0] != V.shape[0]:
        raise ValueError(f"dimension mismatch: {U.shape[0]} vs {V.shape[0]}")
    return np.sort(subspace_angles(U, V))
