"""Rotation of Hessian eigenvectors between two measurements.

Eigenvectors have arbitrary signs and, near the edge of stability, nearly degenerate eigenvalues
whose vectors swap order; hence per-vector numbers take absolute values and subspace numbers
(overlap, principal angles) are invariant to any rotation inside the subspace.
All functions accept numpy arrays or torch tensors (any device) of shape (dim, k) with
orthonormal columns, and return float64 values (numpy arrays; `subspace_overlap` a Python
float).
"""

import numpy as np

__all__ = ["eigenvector_cosines", "subspace_overlap", "principal_angles"]

_ORTHONORMAL_ATOL = 1e-3  # largest |U^T U - I| entry accepted as orthonormal columns


def _as_numpy(U, name):
    """(dim, k) float64 numpy array of orthonormal columns from a numpy array or a torch
    tensor (1-D means k = 1), or a ValueError saying what it is instead."""
    if hasattr(U, "detach"):
        if U.is_complex():
            raise ValueError(f"{name} must be real, got a complex tensor.")
        U = U.detach().cpu().double().numpy()
    U = np.asarray(U)
    if U.dtype.kind not in "biuf":
        raise ValueError(f"{name} must hold real numbers, got dtype {U.dtype}.")
    U = U.astype(np.float64)
    if U.ndim not in (1, 2):
        raise ValueError(f"{name} must be a (dim, k) block or a (dim,) vector, got shape {U.shape}.")
    U = U.reshape(U.shape[0], -1)
    if U.size == 0:
        raise ValueError(f"{name} is empty (shape {U.shape}): no vector to compare.")
    if U.shape[1] > U.shape[0]:
        # more orthonormal columns than dimensions is impossible: a (k, dim) block, transposed
        raise ValueError(f"expected a (dim, k) block of orthonormal columns, got shape {U.shape}: "
                         f"more columns than rows (a transposed block?)")
    if not np.isfinite(U).all():
        raise ValueError(f"{name} contains NaN or infinite values.")
    # the metrics are cosines only for unit, mutually orthogonal columns: a column scaled by 3
    # read as "no rotation" once the results were clipped to [0, 1]
    deviation = np.max(np.abs(U.T @ U - np.eye(U.shape[1])))
    if deviation > _ORTHONORMAL_ATOL:
        raise ValueError(f"{name} must have orthonormal columns (U^T U = I to {_ORTHONORMAL_ATOL:g}); "
                         f"its largest deviation is {deviation:.3g}. Orthonormalise it first "
                         f"(numpy.linalg.qr), or pass unit vectors.")
    return U


def _pair(U, V):
    """``U``, ``V`` checked (`_as_numpy`), with the same dimension."""
    U, V = _as_numpy(U, "U"), _as_numpy(V, "V")
    if U.shape[0] != V.shape[0]:
        raise ValueError(f"dimension mismatch: {U.shape[0]} vs {V.shape[0]}")
    return U, V


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
    U, V = _pair(U, V)
    C = U.T @ V
    if C.shape[0] != C.shape[1]:
        raise ValueError("U and V must have the same number of columns")
    return np.clip(np.abs(np.diag(C)), 0.0, 1.0)


def subspace_overlap(U, V):
    """Overlap ``||U^T V||_F^2 / max(k, l)`` of a k- and an l-dimensional subspace (``/ k``
    for two of dimension k).

    Parameters
    ----------
    U, V : array-like of shape (dim, k) and (dim, l)
        Orthonormal bases, usually of the same width.

    Returns
    -------
    float
        In [0, 1]: 1 = same subspace, 0 = orthogonal subspaces. Invariant to rotations, sign
        flips and reordering inside each basis. For equal widths it is the mean squared
        cosine of the principal angles. For widths ``k != l`` the sum of the squared cosines
        is divided by ``max(k, l)``, so that 1 still means the same subspace: a
        2-dimensional subspace inside a 3-dimensional one scores 2/3 (its two principal
        angles are 0).
    """
    U, V = _pair(U, V)
    C = U.T @ V
    return float(np.clip(np.sum(C * C) / max(C.shape), 0.0, 1.0))


def principal_angles(U, V):
    """Principal angles between the subspaces spanned by ``U`` and ``V``.

    Parameters
    ----------
    U, V : array-like of shape (dim, k) and (dim, l)
        Orthonormal bases.

    Returns
    -------
    np.ndarray of shape (min(k, l),)
        Angles in radians, ascending in [0, pi/2]. Those below 45 degrees are taken from
        sines, those above from cosines (Knyazev and Argentati 2002): the arccos of a cosine
        near 1 loses half the digits (a float32 subspace against itself gave 1e-4 rad).
        `scipy.linalg.subspace_angles` (scipy 1.17) pairs the sines with the wrong angles
        whenever one angle is above 45 degrees and another small (an angle of 1e-9 read 0).
    """
    U, V = _pair(U, V)
    if U.shape[1] < V.shape[1]:
        U, V = V, U
    C = U.T @ V  # (k, l), k >= l
    cosines = np.linalg.svd(C, compute_uv=False)  # descending: the angles ascending
    # the part of V outside span(U): its singular values are the sines, descending
    sines = np.linalg.svd(V - U @ C, compute_uv=False)[::-1]
    small = cosines ** 2 >= 0.5
    return np.where(small, np.arcsin(np.clip(sines, 0.0, 1.0)), np.arccos(np.clip(cosines, 0.0, 1.0)))
