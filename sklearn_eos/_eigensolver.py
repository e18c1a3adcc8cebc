"""Extreme eigenpairs of a symmetric operator known only through block products.

Algorithm: a Krylov method (unpreconditioned Davidson, Lanczos in exact arithmetic) started
from a block, with full reorthogonalisation and Rayleigh-Ritz on the whole basis.

* The basis ``Q`` (orthonormal columns) and its image ``HQ`` are both stored, so the projected
  matrix ``T = Q^T H Q`` and the exact Ritz residuals ``r_i = H u_i - theta_i u_i`` cost no extra
  products.
* Start: the warm-start block (e.g. the previous top-k eigenvectors) plus one random vector
  (more if needed to reach k + 1 columns: a warm start from the old top vector alone once
  returned lambda_4 in place of lambda_3, error 5.7e-3), or ``k + 1`` random vectors (see
  ``_COLD_EXTRA_VECTORS``).
* Expansion: one vector per iteration, the residual of the unconverged pair (wanted or guard)
  whose interval ``theta_i + ||r_i||`` reaches highest, orthogonalised twice against the basis.
  The first block (warm start plus a random vector) already spans several directions; after
  it, adding the residuals of *all* open pairs at once (block Lanczos) spent products on pairs
  that did not need them: on the tracked digits fit (``benchmarks/bench_tracking.py``, warm
  starts 100 steps apart) one vector per iteration cut the median from 36 to 21-22 products
  per measurement at the same accuracy (max error 1.4e-4 to 2e-4 for tol 1e-3), and the
  adversarial blocks of ``tests/test_eigensolver.py`` are still never wrong.
* Stopping: Ritz value ``theta_i`` is accepted when ``min(||r_i||, ||r_i||^2 / gap_i) <=
  tol * |theta_i|``, with ``gap_i`` the distance to the nearest other Ritz value. For a symmetric
  matrix an eigenvalue lies within ``||r_i||`` of ``theta_i`` (always) and within
  ``||r_i||^2 / gap`` when the rest of the spectrum is ``gap`` away (Kato-Temple); the gap is
  estimated from the Ritz values, as ARPACK-style codes do. (Measuring the gap only to Ritz
  values outside the wanted set saved about 10% of the products but let a random-start solve
  stop at 1.3e-3 for tol 1e-3, so the nearest *other* Ritz value is used.) In a guarded solve
  the gap is narrowed by that Ritz value's own residual norm ("The gap's far side"), and a
  cold solve does not lean on a gap until the pair below it has settled ("Trusting a gap").
* Restarts: when the basis exceeds ``_MAX_BASIS`` columns it is thick-restarted on the
  current top ``2k + 2`` Ritz vectors (the wanted ones, the guard and a few more), which keeps
  their images ``HQ`` exact for free. Each iteration reads the basis five times (Ritz
  residuals, one Gram-Schmidt pass of two reads, the new column of ``T``), so its size sets the
  solver's own cost. Restarting at 12 columns instead of 80 left the products unchanged on the
  tracked digits fit (22 per warm measurement then, 27 since the probe and the gap rules;
  ``python benchmarks/bench_certify.py``) and on the adversarial blocks of
  ``benchmarks/bench_guard.py`` (no miss).
* Repeated eigenvalues: each copy needs a start vector of its own, which the expansion may
  not pursue and restarts can drop; when the result holds a repeated value above a lower
  one, a solve of the operator restricted to the complement of the result looks for a lost
  copy (see "Repeated eigenvalues").
* Rounding: no bound is taken below ``resolvable_tol(dtype) * max|theta|`` (four machine
  epsilons of the operator's dtype). The residual bounds see the products only through their
  rounded results, so they keep shrinking past what the dtype resolves: at the digits edge of
  stability, float32 solves asked for 1e-7 and 1e-9 said converged and were 2-3.5e-7 off the
  float64 spectrum. A pair whose tolerance lies below the floor ends the solve, unconverged,
  once its bound reaches the floor. It used to keep the solve going to the end of its
  budget: a float32 regressor that diverged (sharpness 1.2e24 next to an eigenvalue of
  -5.5e28) spent 300 products on its final measurement, now 7 (``python
  benchmarks/bench_far_past_edge.py``, part (d); part (b) in float32: at most 18 products,
  all unconverged, against a median of 93 and up to 300, with 24 of 50 unconverged). The
  price: past the floor the residuals are rounding noise, and expanding by them explored
  at random, which sometimes reached a better value (part (b): largest error of the
  unconverged sharpnesses 6.4e-3, 3.9e-3 before). Such answers are flagged unconverged
  either way.
* The most negative eigenvalue continues from the same basis (Krylov spaces approximate both
  ends of the spectrum; when it is asked for, the top solve's thick restarts keep the bottom
  Ritz vector beside the top ones) with the bottom Ritz pair as the target. It sits at the
  edge of the dense bulk near zero where Ritz gaps mean nothing, so it is judged by the
  residual alone, relative to the spectral radius: ``||r|| <= tol * max|theta|``, with the
  bottom's counterparts of the guard's rules (see "The bottom's neighbours"), which make a
  value above the minimum rarer, not impossible.
* Cost is governed by the k-th eigenvalue: at the edge of stability lambda_3 is often within
  0.5% of lambda_4, so k=3 at 1e-3 costs two to three times k=1 (see the benchmark); hence
  ``rest_tol``.

Why not a library: on the edge-of-stability benchmark (``benchmarks/bench_sharpness.py``, tol
1e-3, points 10 steps apart) ``scipy.sparse.linalg.eigsh`` with the papers' ``k=2, tol=0``
protocol needs 161-199 products, ``scipy`` and ``torch.lobpcg`` 36-389 (``anchors.md``), and none
of them accepts a warm-start *block* with a relative-accuracy stopping rule. This solver, guard
included: lambda_1 alone in 16-30 products warm (23-41 cold), all of the top 3 to 1e-3 in 42-54
warm (run of 2026-12-02; 16-28, 22-38 and 35-42 on 2026-11-30, before the gap rules; 12-22,
17-32 and 32-42 on an earlier machine's trajectory).
"""

from dataclasses import dataclass, replace

import numpy as np
import torch

from ._checks import is_int, is_real

__all__ = ["EigenResult", "MatrixOperator", "NonFiniteProductError", "resolvable_tol", "top_eigenpairs"]

_MAX_BASIS = 12  # columns of the basis for the top pairs before a thick restart (see "Restarts")
_MAX_BASIS_INTERIOR = 80  # the same for the most negative eigenvalue
_N_RANDOM_WITH_START = 1  # random vectors added to a warm start: costs 1 product, guards
# against a start block that has rotated out of the top subspace (0 or 2 measured +-1 product)


class NonFiniteProductError(np.linalg.LinAlgError):
    """The operator returned a product with an inf or NaN entry: no eigenvalue can be
    computed from it. A Hessian does this at parameters next to a divergence, where the
    products overflow in the parameters' dtype (a `numpy.linalg.LinAlgError`)."""


@dataclass
class EigenResult:
    """Outcome of :func:`top_eigenpairs`.

    Attributes
    ----------
    eigenvalues : np.ndarray of shape (k,)
        Largest algebraic eigenvalues, float64, in descending order.
    eigenvectors : torch.Tensor of shape (dim, k)
        Orthonormal columns in the operator's dtype and device; column ``i`` belongs to
        ``eigenvalues[i]``. Signs are arbitrary.
    n_products : int
        Operator-vector products this solve used (a block of ``m`` vectors counts ``m``).
    converged : bool
        Whether every requested eigenvalue met the tolerance within ``max_products``: each
        returned value met the residual bound ``min(||r||, ||r||^2 / gap)``, whose ``gap`` is
        estimated from the Ritz values (so inside a tight cluster it is not a proof), and the
        guard rules make an eigenvalue above the returned ones that the basis barely holds
        rare. Like any Krylov solver it cannot rule out an eigenvalue its basis has not
        seen: from a random ``start`` block, with two eigenvalues within 1e-4 to 1e-2 of each
        other among or just below the top k, the eigenvalue below them came back, converged,
        in place of one of them in 8 of 100 solves over a normal spectrum and 16-22 of 100
        over spectra uniform in [0, 1] or folded normal, from blocks of eigenvectors with 30%
        noise in none, and from cold starts in 0-1 of 100 (dimension 80, k=3; ``python
        benchmarks/bench_start_blocks.py``, part (a)). A cluster wider than k is harder: with
        five eigenvalues within 1% at the top, cold solves at k=3 returned ``eig_2`` or
        ``eig_3`` more than tol off, converged, in 7 and 15 of 150 (up to 4.8 tol), the top
        one never (``python benchmarks/bench_cold_cluster.py``, part (b)).
    min_eigenvalue : float or None
        Smallest (most negative) eigenvalue when ``compute_min=True``.
    min_eigenvector : torch.Tensor of shape (dim,) or None
        Its unit eigenvector.
    spectral_radius : float
        The largest Ritz value in magnitude that the solve saw (a lower bound on the spectral
        radius, float64), the scale of the rounding floor ``resolvable_tol(dtype) *
        spectral_radius``: no eigenvalue is certified more closely than that. NaN where no
        solve produced it.
    at_rounding_floor : bool
        Whether the solve ended unconverged because the tolerance of one of its eigenvalues
        (any of the k, or the most negative) lies below that floor, so that no further
        product could meet it, rather than for want of products. Such a Ritz value may lie
        on either side of the eigenvalue, by about the floor: rounding in the products, not
        only a partial Krylov space, sets its error.
    """

    eigenvalues: np.ndarray
    eigenvectors: torch.Tensor
    n_products: int
    converged: bool
    min_eigenvalue: float | None = None
    min_eigenvector: torch.Tensor | None = None
    spectral_radius: float = float("nan")
    at_rounding_floor: bool = False


class MatrixOperator:
    """An explicit symmetric matrix with the operator interface (for tests and references).

    Parameters
    ----------
    A : array-like of shape (dim, dim)
        Symmetric matrix (numpy array or torch tensor).
    dtype : torch.dtype, optional
        Working dtype; default: that of ``A`` as a tensor.
    """

    def __init__(self, A, dtype=None):
        A = torch.as_tensor(A)
        if A.is_complex():  # a cast to real drops the imaginary part, and with it Hermitian-ness
            raise ValueError("A must be a real symmetric matrix; complex matrices are not supported")
        if dtype is not None and not (isinstance(dtype, torch.dtype) and dtype.is_floating_point):
            # an integer dtype truncated the entries (2.6 became 2) without a word
            raise ValueError(f"dtype must be a floating-point torch dtype, got {dtype!r}")
        self.A = A if dtype is None else A.to(dtype)
        if not self.A.is_floating_point():
            self.A = self.A.double()  # an integer matrix: its eigenpairs are real numbers
        if self.A.ndim != 2 or self.A.shape[0] != self.A.shape[1]:
            raise ValueError("A must be a square matrix")
        if not bool(torch.isfinite(self.A).all()):
            raise ValueError("A must not contain NaN or infinite entries")
        scale = float(self.A.abs().max()) if self.A.numel() else 0.0
        if not torch.allclose(self.A, self.A.T, rtol=1e-5, atol=1e-8 * scale):
            raise ValueError("A must be symmetric")
        self.dim = self.A.shape[0]
        self.dtype = self.A.dtype
        self.device = self.A.device
        self.n_products = 0

    def matmat(self, V):
        """``A @ V`` for a (dim, m) block, cast to the operator's dtype and device as
        `FullBatchHessian` casts it; counts ``m`` products once they are done."""
        V = torch.as_tensor(V).to(dtype=self.dtype, device=self.device)
        if V.ndim != 2 or V.shape[0] != self.dim:
            raise ValueError(f"expected a ({self.dim}, m) block, got shape {tuple(V.shape)}")
        out = self.A @ V
        self.n_products += V.shape[1]
        return out

    def matvec(self, v):
        """``A @ v`` for a (dim,) vector."""
        v = torch.as_tensor(v)
        if v.ndim != 1:  # as FullBatchHessian.matvec: a (1, dim) row is not a vector
            raise ValueError(f"expected a vector of shape ({self.dim},), got shape {tuple(v.shape)}; "
                             f"use matmat for a block of vectors")
        return self.matmat(v.reshape(-1, 1))[:, 0]


def _row_norms(Wt):
    """Euclidean norms of the rows of ``Wt``, in its dtype, safe from the underflow and
    overflow of the squares. Unguarded, the norms of a float32 operator of spectral radius
    1e-25 read 0, and the solver accepted a first, wrong Ritz value as converged. The plain
    norm is exact unless it is small enough for squared entries to have underflowed, or
    infinite; only then are the rows scaled by their largest entry (a float64 norm on every
    iteration would cost several plain ones)."""
    norms = torch.linalg.vector_norm(Wt, dim=1)
    info = torch.finfo(Wt.dtype)
    small = info.tiny ** 0.5 * Wt.shape[1] ** 0.5 / info.eps
    if bool(((norms < small) | torch.isinf(norms)).any()):
        scale = Wt.abs().amax(dim=1, keepdim=True)
        scale = torch.where(scale > 0, scale, torch.ones_like(scale))
        norms = torch.linalg.vector_norm(Wt / scale, dim=1) * scale[:, 0]
    return norms


# the share of a unit vector's norm that one Gram-Schmidt pass may remove and be the only one
# (a projection onto the basis of norm below 0.1): see _Subspace._orthonormalise
_ONE_PASS = 0.995


class _Subspace:
    """Orthonormal basis ``Q``, its image ``HQ`` and the projection ``T = Q^T H Q`` (float64).

    Q and HQ are kept as preallocated contiguous rows (m, dim), grown by doubling, and a new
    block is orthogonalised against the whole basis at once (classical Gram-Schmidt, with a
    second pass when the DGKS criterion asks for it), never by concatenating the basis.
    """

    def __init__(self, operator):
        self.operator = operator
        self.T = np.zeros((0, 0))
        self.n_products = 0
        self._drop = torch.finfo(operator.dtype).eps ** 0.5
        self._cap = 2 * _MAX_BASIS
        self._Qt = torch.empty(self._cap, operator.dim, dtype=operator.dtype, device=operator.device)
        self._HQt = torch.empty_like(self._Qt)
        self._m = 0
        self.radius = 0.0  # the largest |Ritz value| seen (restarts may drop its pair)

    @property
    def size(self):
        return self._m

    def _orthonormalise(self, Wt):
        """Orthonormalise the rows of ``Wt`` (n, dim) against the basis and each other."""
        norm0 = _row_norms(Wt)
        # unit rows first: the projections of a row of subnormal numbers (the residuals of a
        # float32 Hessian whose products are ~1e-39, a saturated network) onto the basis
        # underflowed, Gram-Schmidt left most of the basis in it, and the "eigenvectors" came
        # back far from orthonormal (a fit crashed in the rotation metrics; see the test of a
        # float32 operator of subnormal size)
        nonzero = norm0 > 0
        Wt = Wt / torch.where(nonzero, norm0, torch.ones_like(norm0))[:, None]
        norm0 = nonzero.to(Wt.dtype)
        Q = self._Qt[:self._m]
        norms = norm0
        settled = True
        if self._m:
            # classical Gram-Schmidt, with a second pass unless the first removed next to
            # nothing: a Ritz residual is orthogonal to the basis up to rounding, so one pass
            # is the usual case (half of the basis reads saved). The second pass was taken
            # only when the first removed most of a vector (DGKS's 1/sqrt(2)), but a residual
            # at the rounding level lies half in the basis's span, and one pass passes on
            # the basis's own error, amplified: a float32 solve of noise went from 1e-6 to
            # 1.0 off orthonormal in 70 expansions, its bottom Ritz value to -458 for -4.99
            # (audit E of session 37); 'twice is enough' (CGS2) keeps it at rounding
            for second in (False, True):
                before = norms
                Wt = torch.addmm(Wt, Wt @ Q.T, Q, alpha=-1)
                norms = _row_norms(Wt)
                settled = bool((norms > 0.7 * before).all())
                if not second and bool((norms > _ONE_PASS * before).all()):
                    break
        if Wt.shape[0] == 1:  # the usual expansion: no host loop over columns
            # after a second pass that still removed most of it, the vector lies in the
            # basis's span to working precision, and what is left is rounding
            return Wt / norms[0] if settled and bool(norms[0] > self._drop * norm0[0]) else None
        kept = []
        floor = (self._drop * norm0).tolist()
        for j in range(Wt.shape[0]):
            if floor[j] == 0:
                continue
            w = Wt[j]
            for _ in range(2):
                for q in kept:
                    w = w - (q @ w) * q
            norm = _row_norms(w[None])[0]
            if norm > floor[j]:
                kept.append(w / norm)
        return torch.stack(kept) if kept else None

    def _ensure(self, n):
        if self._m + n > self._cap:
            self._cap = 2 * (self._m + n)
            for name in ("_Qt", "_HQt"):
                old = getattr(self, name)
                new = torch.empty(self._cap, old.shape[1], dtype=old.dtype, device=old.device)
                new[:self._m] = old[:self._m]
                setattr(self, name, new)

    def extend(self, W):
        """Add the columns of ``W`` (dim, n), orthonormalised, and their images."""
        return self.extend_rows(W.T.contiguous())

    def extend_rows(self, Wt):
        """`extend` for a block given as rows ``Wt`` (n, dim)."""
        Vt = self._orthonormalise(Wt)
        if Vt is None:
            return 0
        n = Vt.shape[0]
        HV = self.operator.matmat(Vt.T)  # (dim, n), columns are contiguous rows of Vt
        self.n_products += n
        # rows whatever the strides of the operator's output: a (dim, 1) result with strides
        # (1, 1) made the copy below 20 times slower than a plain one
        HVt = HV.T.reshape(n, -1)
        cross = (self._Qt[:self._m] @ HVt.T).double().cpu().numpy()
        corner = (Vt @ HVt.T).double().cpu().numpy()
        if not (np.isfinite(cross).all() and np.isfinite(corner).all()):
            raise NonFiniteProductError(
                f"the operator returned non-finite products (inf or NaN) after {self.n_products} "
                f"products; a Hessian does this at parameters next to a divergence, where its "
                f"products overflow in {self.operator.dtype}.")
        corner = 0.5 * (corner + corner.T)  # after the check: inf + -inf warns
        self.T = np.block([[self.T, cross], [cross.T, corner]])
        self._ensure(n)
        self._Qt[self._m:self._m + n] = Vt
        self._HQt[self._m:self._m + n] = HVt
        self._m += n
        return n

    def ritz(self):
        """Ritz values (descending, float64) and coefficient vectors ``Y`` (float64)."""
        theta, Y = np.linalg.eigh(self.T)
        if theta.size:
            self.radius = max(self.radius, float(np.max(np.abs(theta))))
        return theta[::-1].copy(), Y[:, ::-1].copy()

    def residual_rows(self, Y, theta):
        """Ritz residuals ``H u_i - theta_i u_i`` as rows (p, dim), for the coefficient
        columns ``Y`` (m, p) and Ritz values ``theta`` (p,): two reads of the basis."""
        Yt = torch.as_tensor(Y, dtype=self._Qt.dtype, device=self._Qt.device)
        Ys = torch.as_tensor(Y * -np.asarray(theta)[None, :], dtype=self._Qt.dtype,
                             device=self._Qt.device)
        Rt = self._scratch("_Rt", Yt.shape[1])  # valid until the next call
        return torch.mm(Yt.T, self._HQt[:self._m], out=Rt).addmm_(Ys.T, self._Qt[:self._m])

    def _scratch(self, name, rows):
        """A (rows, dim) buffer kept between calls, grown when too small: a fresh block every
        iteration can come from memory the allocator has just given back to the system, and
        then page faults slow the product that writes it."""
        buffer = getattr(self, name, None)
        if buffer is None or buffer.shape[0] < rows:
            buffer = torch.empty(rows, self.operator.dim, dtype=self.operator.dtype,
                                 device=self.operator.device)
            setattr(self, name, buffer)
        return buffer[:rows]

    def vectors(self, Y):
        """Ritz vectors ``Q Y`` (dim, p) for the coefficient columns ``Y`` (m, p)."""
        Yt = torch.as_tensor(Y, dtype=self._Qt.dtype, device=self._Qt.device)
        return (Yt.T @ self._Qt[:self._m]).T

    def restart(self, Y):
        """Keep only the Ritz vectors ``Q Y`` and their images ``HQ Y`` (thick restart)."""
        Yt = torch.as_tensor(Y, dtype=self._Qt.dtype, device=self._Qt.device).T
        m, p = self._m, Yt.shape[0]
        for rows in (self._Qt, self._HQt):
            if m + p <= self._cap:  # into the free rows after the basis (see `_scratch`)
                rows[:p] = torch.mm(Yt, rows[:m], out=rows[m:m + p])
            else:  # not grown for this: the basis would keep the extra rows
                rows[:p] = Yt @ rows[:m]
        self._m = p
        T = Y.T @ self.T @ Y
        self.T = 0.5 * (T + T.T)


# eigenvalues below this fraction of the largest wanted one (in magnitude) count as zero. Not a
# fraction of the spectral radius: a classifier's Hessian far past the edge of stability had a
# top of 18.5 (three times) and a most negative eigenvalue of -846436, so every top eigenvalue
# counted as zero, was judged against 1e-3 * 846 (4.6% of the sharpness; 85, all of it, for
# rest_tol 0.1) and the guard against 25, and eig_3 came from the cluster at 7.96. On a
# spectrum built like it (``python benchmarks/bench_far_past_edge.py``, part (b)) 45 of 50 cold
# solves said converged and were wrong before, none now. In float32 the sharpness there is 45
# rounding floors tall, so 1e-3 of it cannot be certified: every solve ends unconverged (see
# "Rounding"), none is wrong. Below the radius's own fraction the rounding floor still applies.
_ZERO_FLOOR = 1e-3
# ... unless even the largest wanted eigenvalue is no more than this many rounding floors
# (``resolvable_tol(dtype) * max|theta|``): all the wanted ones are then zeros (a negative
# semidefinite operator whose top is a null space), and the spectral radius is the scale, as
# it was for every eigenvalue before. With the largest wanted one as their scale, such zeros
# were judged against the rounding floor itself and spent the whole budget (part (c) of the
# same benchmark: 300 products and unconverged in float64 at commit 1f62d56; 163-170 now, as
# the zeros' Ritz values hover near 10 floors, against 135-141 with the radius's scale alone).
_ZERO_WANTED = 10
_ROUNDING_EPS = 4  # machine epsilons: the smallest error bound trusted (see "Rounding")


def resolvable_tol(dtype):
    """Smallest relative tolerance that a solve in ``dtype`` (a torch dtype) can certify:
    ``4 * eps`` (4.8e-7 for float32, 8.9e-16 for float64), relative to the spectral radius.

    It assumes products accurate to a few ``eps`` of the radius. An operator whose products
    round worse is certified less closely than that near the floor: explicit float32 matrices
    of dimension 1000 and 2000 (each product sums ``dim`` terms) returned converged values up
    to 2.4 and 4.3 floors off, 1.2 and 2.1 times a tolerance of two floors (``python
    benchmarks/bench_float32_floor.py``). Ask for ten floors or more in float32, or use float64;
    the tracker's 1e-3 is thousands of floors."""
    if not (isinstance(dtype, torch.dtype) and dtype.is_floating_point):
        raise ValueError(f"dtype must be a floating-point torch dtype (torch.float32, ...), got {dtype!r}")
    return _ROUNDING_EPS * torch.finfo(dtype).eps


def certified_sharpness(result, tol):
    """``result`` (an `EigenResult`) as a sharpness measurement to ``tol``: ``converged``
    False, and ``at_rounding_floor`` True, when the rounding floor ``resolvable_tol(dtype) *
    spectral_radius`` hides ``tol`` of the top eigenvalue (``tol * |lambda_1|`` below it) or the
    solver judged the top a zero (``|lambda_1|`` within ten floors of zero).

    `top_eigenpairs` ends a solve of the first kind unconverged itself, but certifies a zero
    only to ``tol * 1e-3 * spectral_radius`` (see ``tol`` there), which says nothing of the
    sharpness's relative accuracy. A float64 classifier whose loss reached 1e20 had a top
    eigenvalue of about 13 beside one of -3.8e16 (a floor of 34): the tracker's last row and
    ``measure_sharpness`` said converged at values well below 13 (``tests/test_tracking.py``,
    ``test_a_sharpness_that_float64_cannot_resolve_is_not_reported_converged``, builds that
    fit). The second test matters for a
    ``tol`` of 0.1 or more, where the first misses a top of up to ten floors. An operator that
    is exactly zero (a floor of 0) has nothing to resolve. Returns ``result`` itself, or a copy.
    """
    floor = resolvable_tol(result.eigenvectors.dtype) * result.spectral_radius
    top = abs(float(result.eigenvalues[0]))
    if not (result.converged and floor > 0 and (tol * top < floor or top <= _ZERO_WANTED * floor)):
        return result
    return replace(result, converged=False, at_rounding_floor=True)


def _error_bounds(theta, residual_norms, index, use_gap, radii=None):
    """Error bounds on the Ritz values ``theta[index]`` from their residual norms ``||r_i||``.

    Always ``||r_i||`` (an eigenvalue lies that close); with ``use_gap`` the quadratic bound
    ``||r_i||^2 / gap_i`` when smaller, ``gap_i`` being the distance from ``theta_i`` to the
    nearest other Ritz value (an estimate of the distance to the rest of the spectrum), less
    that Ritz value's own residual norm from ``radii`` (one per Ritz value, 0 where unknown):
    its eigenvalue may lie that much closer (see "The gap's far side").
    """
    index = np.asarray(index)
    r = np.asarray(residual_norms, dtype=np.float64)
    if not use_gap or theta.size < 2:
        return r
    radii = np.zeros(theta.size) if radii is None else np.asarray(radii, dtype=np.float64)
    # theta is sorted (descending): the nearest other Ritz value is a neighbour
    step = np.diff(-theta)
    above = np.concatenate([[np.inf], step - radii[:-1]])[index]
    below = np.concatenate([step - radii[1:], [np.inf]])[index]
    gap = np.minimum(above, below)
    # r * (r / gap), not r * r / gap: the square of a residual below 1e-154 underflows to 0 in
    # float64, and an operator scaled by 1e-200 had every pair accepted at once
    with np.errstate(over="ignore"):  # r / gap of a huge residual (next to a divergence): inf
        return np.where(gap > 0, np.minimum(r, r * (r / np.where(gap > 0, gap, np.inf))), r)


def _top_leans_on_an_untrusted_gap(theta, rnorm, required, floor, tol):
    """Whether the top Ritz pair (``theta[0]``, residual norm ``rnorm[0]``) is accepted by its
    quadratic bound alone (its residual above ``required``, its tolerance) while the pair below
    has a residual above ``_TRUSTED_GAP_WARM`` times their gap (and above its own tolerance,
    ``tol * |theta[1]|``): that pair may hold an eigenvector above the top Ritz value."""
    if len(theta) < 2 or len(rnorm) < 2 or required < floor or max(rnorm[0], floor) <= required:
        return False
    return rnorm[1] > max(tol * abs(theta[1]), floor, _TRUSTED_GAP_WARM * (theta[0] - theta[1]))


def _accuracy_asked(theta, index, tols, floor, interior):
    """Absolute accuracy asked of each wanted Ritz value ``theta[index]``, and of the top one.

    Relative to the eigenvalue (``tols``: one per wanted pair, or a scalar), but never below a
    small fraction of the largest wanted one (see ``_ZERO_FLOOR``): a (near-)zero eigenvalue
    of a rank-deficient Hessian has no relative accuracy. An interior target's is relative to
    the spectral radius. Returns ``(required, top_tol, scale)``; ``top_tol`` (0 for an interior
    solve) is never below the rounding floor ``floor``, and ``scale`` is what ``tols``
    multiplied.
    """
    radius = np.max(np.abs(theta))
    largest = np.max(np.abs(theta[index]))
    zero = _ZERO_FLOOR * (largest if largest > _ZERO_WANTED * floor else radius)
    scale = radius if interior else np.maximum(np.abs(theta[index]), zero)
    required = (tols if tols.ndim == 0 else tols[:len(index)]) * scale
    if interior:
        return required, 0, scale
    # such an eigenvalue is certified down to the rounding floor at most: tol * 1e-3 * its
    # scale below it (tol < 4.8e-4 in float32) never converged, all budget spent
    required = np.where(np.abs(theta[index]) < zero, np.maximum(required, floor), required)
    top_tol = max((tols if tols.ndim == 0 else tols[0]) * scale[0], floor)
    return required, top_tol, scale


def _open_pairs(theta, rnorm, full, n_index, n_guards, n_neighbours, tols, floor, *, interior, cold,
                random_pair=None, random_guard=None):
    """Which Ritz pairs keep a solve going: the acceptance test of `_solve`, without products.

    ``theta`` holds every Ritz value (descending); ``full`` the positions of the pairs whose
    residual norms ``rnorm`` were taken, in this order: the ``n_index`` wanted ones, then the
    ``n_guards`` guards (0: an unguarded solve) or the ``n_neighbours`` bottom neighbours of an
    interior solve, then the random vector's pair when it is none of them (``random_pair``, its
    position in ``full``; ``random_guard``: its position when it is a guard). ``floor`` is the
    rounding floor. Returns ``(required, top_tol, stuck, open_)``: the accuracy asked of the
    wanted pairs and of the top one (`_accuracy_asked`), the wanted pairs that no further
    product can certify (their tolerance below the floor, their bound at it: see "Rounding"),
    and one flag per pair of ``full`` (True: not yet accepted).
    """
    index = list(full[:n_index])
    guards = list(full[n_index:n_index + n_guards])
    radii = None  # a guarded solve narrows each gap by the residual norm on its far side
    if n_guards:
        radii = np.zeros(len(theta))
        radii[index + guards] = rnorm[:n_index + n_guards]
    raw = _error_bounds(theta, rnorm[:n_index], index, use_gap=not interior, radii=radii)
    bounds = np.maximum(raw, floor)
    required, top_tol, scale = _accuracy_asked(theta, index, tols, floor, interior)
    open_ = bounds > required
    # a pair whose tolerance lies below the rounding floor and whose bound has reached it no
    # longer keeps the solve going, and the solve ends unconverged
    stuck = open_ & (required < floor) & (raw <= floor)
    open_ = open_ & ~stuck
    if n_neighbours:
        # a neighbour whose residual interval reaches below the bottom Ritz value by more
        # than the tolerance may hold weight on an eigenvalue below it
        neighbours = full[n_index:n_index + n_neighbours]
        open_ = np.append(open_, theta[neighbours] - rnorm[n_index:n_index + n_neighbours]
                          < theta[index[0]] - required)
    if not n_guards:
        return required, top_tol, stuck, open_
    guard_scale = scale[-1] if np.ndim(scale) else scale
    guard_open = rnorm[n_index:] > max(_GUARD_TOL * guard_scale, floor)
    if random_pair is not None:
        guard_open[-1] = rnorm[random_pair] > top_tol
    if random_guard is not None:  # both tests ("The random vector's pair")
        guard_open[random_guard - n_index] |= rnorm[random_guard] > top_tol
    open_ = np.append(open_, guard_open)
    # a pair whose residual interval reaches above the top Ritz value may hold weight on an
    # eigenvalue above it: keep it open
    reach = theta[full] + rnorm > theta[0] + top_tol
    reach[0] = False
    open_ = open_ | reach
    if cold:
        # a wanted pair accepted by its quadratic bound alone (its residual above the
        # tolerance) leans on the gap to the pair below: that pair stays open until its
        # residual is a fraction of the gap ("Trusting a gap")
        n = n_index
        trusted = np.maximum.reduce([(tols if tols.ndim == 0 else tols[:n]) * np.abs(theta[1:n + 1]),
                                     np.full(n, floor), _TRUSTED_GAP * (theta[:n] - theta[1:n + 1])])
        untrusted = (~open_[:n] & (required >= floor) & (np.maximum(rnorm[:n], floor) > required)
                     & (rnorm[1:n + 1] > trusted))
        open_[1:n + 1] |= untrusted
    return required, top_tol, stuck, open_


def _solve(space, index_of, n_wanted, tol, max_products, generator, interior=False, guard=False,
           cold=False, guard_index=None, random_columns=None, keep_bottom=False):
    """Expand ``space`` until the wanted Ritz pairs meet ``tol``.

    ``index_of(n_ritz)`` returns the indices (in descending Ritz order) of the wanted pairs.
    ``interior=False``: accuracy ``tol`` relative to each wanted Ritz value, quadratic bound.
    ``interior=True`` (a target inside a dense part of the spectrum, e.g. the most negative
    eigenvalue next to the bulk near zero, where Ritz gaps are unreliable): residual bound only,
    accuracy ``tol`` relative to the spectral radius estimate ``max |theta|``.
    ``guard=True`` (top pairs only): the Ritz pair just below the wanted ones (index
    ``n_wanted``; with ``guard_index``, every pair from there to that index) is a guard. Its
    residual joins every expansion until it meets the guard test, and the wanted pairs are
    only accepted together with it. The guard is the best vector of the basis outside the
    wanted pairs (and outside a wider start block), so it is where an eigenvalue missing from
    a warm-start block shows up; see ``_GUARD_TOL``. With the guard, the top pair's residual
    is also added to the basis at least once before the wanted pairs are accepted (the
    top-residual rule, see the notes above ``_GUARD_TOL``).
    ``cold=True`` (a random start): the first ``_COLD_BLOCK_ITERS`` expansions add every open
    residual at once.
    ``random_columns`` (a warm start: the basis columns of its random vectors): until the first
    thick restart, the Ritz pair that holds most of them is expanded once before the wanted
    pairs are accepted, unless its residual meets ``tol`` (see "The random vector's pair").
    ``keep_bottom`` (a top solve that a most-negative one continues): thick restarts keep the
    bottom Ritz vector too, the best the basis has seen of the most negative eigenvector.
    With ``_TRUSTED_GAP_WARM`` set (None, off, in the package), a warm solve about to stop
    first takes Krylov steps from the second pair while `_top_leans_on_an_untrusted_gap`.
    Returns ``(theta, U, converged, at_floor)`` for the wanted pairs, ``at_floor`` True when
    the solve ended unconverged because a pair's tolerance lies below the rounding floor.
    """
    op = space.operator
    tols = np.asarray(tol, dtype=np.float64)
    guard_index = n_wanted if guard_index is None else guard_index
    # the Ritz value of the edge pair (the top one; the bottom one of an interior solve) when
    # its residual was last added to the basis
    edge_theta = None
    block_iters = 0
    random_open = random_columns is not None  # the random vector's pair not yet expanded
    while True:
        theta, Y = space.ritz()
        index = index_of(len(theta))
        # the guard pairs: the (k+1)-th, or every pair from there to the bottom of a wider
        # start block ("Wide start blocks")
        guards = list(range(n_wanted, min(guard_index + 1, len(theta)))) if guard else []
        use_guard = bool(guards) and space.size < op.dim
        full = index + guards if use_guard else index
        # the most negative eigenvalue: the pairs just above the bottom one, whose intervals may
        # reach below it ("The bottom's neighbours")
        neighbours = (list(range(len(theta) - 2, -1, -1))[:_BOTTOM_NEIGHBOURS]
                      if interior and space.size < op.dim else [])
        full = full + neighbours
        random_pair = None  # its position in ``full``
        random_guard = None  # the same when it is one of the guard pairs
        if random_open and use_guard:
            j = int(np.argmax((Y[random_columns] ** 2).sum(axis=0)))
            if j not in full:
                full, random_pair = full + [j], len(full)
            elif j not in index:
                random_guard = full.index(j)
        Rt = space.residual_rows(Y[:, full], theta[full])
        rnorm = _row_norms(Rt).double().cpu().numpy()
        floor = resolvable_tol(op.dtype) * np.max(np.abs(theta))
        required, top_tol, stuck, open_ = _open_pairs(
            theta, rnorm, full, len(index), len(guards) if use_guard else 0, len(neighbours), tols, floor,
            interior=interior, cold=cold, random_pair=random_pair, random_guard=random_guard)
        enough = len(theta) >= n_wanted
        budget = max_products - space.n_products
        if enough and not open_.any():
            # the top-residual rule (its bottom counterpart for an interior solve, see "The
            # bottom's neighbours"): a Krylov step from the edge pair, unless one was taken
            # since its Ritz value last moved by more than the tolerance
            settled = _BOTTOM_SETTLED * float(required) if interior else top_tol
            moved = (guard or interior) and (edge_theta is None or abs(theta[full[0]] - edge_theta) > settled)
            if moved and budget > 0 and space.size < op.dim:
                edge_theta = theta[full[0]]
                if space.extend_rows(Rt[:1]) > 0:
                    continue
            if (_TRUSTED_GAP_WARM is not None and not cold and use_guard and not interior
                    and budget > 0 and space.size < op.dim and _top_leans_on_an_untrusted_gap(
                        theta, rnorm, required[0], floor, tols if tols.ndim == 0 else tols[0])):
                # off by default ("Trusting a gap"): a Krylov step from the second pair
                if space.extend_rows(Rt[1:2]) > 0:
                    continue
            return theta[index], space.vectors(Y[:, index]), not stuck.any(), bool(stuck.any())
        if budget <= 0 or space.size >= op.dim:
            return theta[index], space.vectors(Y[:, index]), False, False
        n_keep = max(2 * n_wanted, guard_index) + 2
        if space.size > max(_MAX_BASIS_INTERIOR if interior else _MAX_BASIS, n_keep + 4):
            keep = set(index) | set(neighbours) | set(range(min(len(theta), n_keep)))
            if keep_bottom:  # what the most negative solve that follows starts from
                keep.add(len(theta) - 1)
            keep = sorted(keep)
            space.restart(Y[:, keep])
            random_open = False  # the random columns are gone
            continue
        if enough and cold and block_iters < _COLD_BLOCK_ITERS:
            # a random start: the first expansions take every open residual (block Krylov)
            block_iters += 1
            Wt = Rt[np.flatnonzero(open_)[:budget]]  # within the budget of products
            if open_[0]:
                edge_theta = theta[full[0]]
        elif enough:
            # one vector per iteration: the residual of the open pair whose interval
            # theta_i + ||r_i|| reaches highest (see "Expansion" in the module notes)
            # (for the most negative eigenvalue: lowest, theta_i - ||r_i||)
            extent = -(theta[full] - rnorm) if interior else theta[full] + rnorm
            j = int(np.flatnonzero(open_)[np.argmax(extent[open_])])
            Wt = Rt[j:j + 1]
            if j == random_pair:
                random_open = False
            if j == 0:
                edge_theta = theta[full[0]]
        else:
            Wt = None  # fewer Ritz pairs than wanted: random vectors, below
        if Wt is None or space.extend_rows(Wt) == 0:
            n_new = min(budget, max(1, n_wanted - len(theta)))
            W = torch.randn(op.dim, n_new, generator=generator, dtype=op.dtype).to(op.device)
            if space.extend(W) == 0:
                return theta[index], space.vectors(Y[:, index]), False, False


# Guard against a basis that has not yet seen the top eigenvector (a tracked digits fit returned
# lambda_3 for the sharpness, converged=True, error 4.5e-3 at tol 1e-3: the warm-block pairs
# converged before the Krylov space held the new top direction; the residual bound only proves
# theta is near *some* eigenvalue). (1) The Ritz pair below the wanted ones (the guard, where a
# missing eigenvalue shows up) is expanded until its residual is <= _GUARD_TOL * |theta|, and
# (2) no pair is accepted while its residual interval theta_i + ||r_i|| reaches above the top
# Ritz value (plus tol): such a loosely converged pair can be a mix holding the missing top
# eigenvector. Cold starts get the guard too: an unguarded random start on the same fit also
# stopped 4e-3 low at step 800. The tolerance: ``python benchmarks/bench_guard.py`` (48 warm
# blocks lacking v1, the construction of the randomized test; with the top-residual rule below)
# misses 0 times at 2e-2 to 4e-2, 1 at 5e-2 and 9 at 8e-2 (11 before "The random vector's
# pair"), for a median of 16 products against 15; over a bulk concentrated near zero (``--bulk
# tail``) 0 at 2e-2 to 5e-2 and 3 at 8e-2 (7 before the gap rules): 3e-2, with a step of margin.
# On the tracked digits fit (``benchmarks/bench_tracking.py``, every 100 steps) the guarded
# solver needs a median of 21-22 products per warm measurement (36 when it expanded by every
# open residual, commit a7de044); without the guard's tolerance 18-19, but 2 of 45 measurements
# (three seeds) then returned lambda_2 (up to 1.5e-2 off; ``python
# benchmarks/bench_certify.py``, on an earlier session's machine; with the probe and the gap
# rules, run of 2026-12-03: 28 with the guard's tolerance, 24 without, no miss either way). Both
# are heuristics: no residual bound rules out an eigenvalue the Krylov space has not yet seen.
_GUARD_TOL = 3e-2

# The top-residual rule (no constant: it has no parameter). A warm block that holds
# eigenvectors 2..k+1 almost exactly converges at once, and over a bulk concentrated near zero
# so does the guard pair of the random start vector: the solve could then accept lambda_2 as
# the sharpness without a single Krylov step. But the top pair's residual, orthogonal to the
# block, points at what the block lacks (for a block inside span(v1..v4), at v1 itself). So a
# guarded solve adds the top pair's residual before it accepts, unless it did so since the top
# Ritz value last moved by more than the tolerance. (Adding it once per solve was not enough:
# a cold start could add it early, then converge on a top Ritz vector that mixed v2 with a
# little v1 and accept lambda_2, 1.2% low, at tol 1e-3: Hessians X^T X / n of a linear model
# whose top two eigenvalues were 1% apart, 3 of 20 seeds.) On the tracked digits chain and the
# adversarial blocks of ``bench_guard.py`` this costs no product.

# Cold starts (no start block): the first _COLD_BLOCK_ITERS expansions add the residuals of
# every open pair at once (block Krylov) instead of one. From random vectors alone, one residual
# per iteration can leave the span of the few top eigenvectors half explored and converge on
# a mix. Over 300 random spectra of five outliers (lambda_2 0.2-3% below lambda_1) above a
# bulk near zero, dimension 150, tol 1e-3, k=3, a cold solve returned a sharpness more than
# 1e-3 low, converged, on 34 (median 10 products); with the rule above 13; with two block
# iterations as well 2 (median 12). With a top cluster of six eigenvalues within 3% above a
# dense bulk: 29, then 14 (median 25, then 29 products). ``python
# benchmarks/bench_cold_start.py`` prints these (the first of each against commit e978c4c).
# Warm starts are unchanged; the cold top-3 on the digits-like spectrum of
# ``tests/test_eigensolver.py`` takes 32 products instead of 28.
_COLD_BLOCK_ITERS = 2
# A cold start takes k + 1 random vectors, as a warm block has at least k + 1 columns: from k,
# a cluster one wider than k had fewer start directions than eigenvalues, the Krylov space
# grew a mix of v_1 and v_2 (their Ritz residual is small when they are close) and the
# quadratic bound, its gap taken to a Ritz value outside the cluster, accepted it. ``python
# benchmarks/bench_cold_start.py``, part (c), k + 1 top eigenvalues equally spaced above a bulk
# near zero, k = 1, 2, 3, 60 matrices each: solves that said converged with an eigenvalue more
# than tol off, from k vectors / from k + 1: 15 / 1 at tol 1e-3 and a spacing of 3e-3, 29 / 1
# and 11 / 1 at tol 1e-5 and spacings of 2e-4 and 1e-3 (the worst error, about 3, 20 and 100
# times tol, is that of the one miss left: rarer, not smaller). Part (a): the five-outlier
# spectra above 2 / 0 misses (12 / 13 products), the six-cluster 14 / 10 (29 / 33). Part (b),
# the user guide's model, 20 seeds at tol 1e-3 for all three: lambda_1 never off, lambda_3 off
# by more than 1.5e-3 (lambda_4 returned in its place) 0 / 1 times, 28 / 30 products. (Those
# figures predate the gap rules below; the run of 2026-12-03 gives, from k / k + 1 vectors,
# part (a) 1 / 0 misses (12 / 13 products) and 7 / 2 (34 / 37), part (b) 0 / 0 (29 / 32).)
# Inside the edge-of-stability cluster of the tracked digits fit a cold solve costs 36-55
# products (``benchmarks/bench_warm_refit.py``, run of 2026-12-02; 36-57 on 2026-11-30, 33-39
# against 21-28 from k vectors in an earlier run); tracking starts warm.
_COLD_EXTRA_VECTORS = 1
# ``bench_guard.py --bulk tail``: 1 miss of 48 at 3e-2 without the rule (at commit 0a83bf7),
# none with it, same median products; on the tracked digits fit the top pair is always
# expanded anyway (22 products per warm measurement either way, ``bench_certify.py``, when the
# rule was added; 27 since the probe and the gap rules).

# The gap's far side (no constant). The quadratic bound ||r_i||^2 / gap_i takes the gap from
# the nearest other *Ritz* value, but the eigenvalue that Ritz value stands for may lie as much
# as its own residual norm closer. A warm block that had lost the top eigenvector (2% of v1 in
# it, on the digits example at lr 0.25, step 600) gave a top Ritz value between lambda_1 and
# lambda_2 (8.329 for 8.411 and 8.327) with a residual of 0.055, 6.6 times the tolerance, and
# the quadratic bound accepted it with the gap 0.376 to the pair below, whose residual was
# 0.225: 9.7e-3 low, converged, in 13 products. So in a guarded solve each gap is narrowed by
# the residual norm of the Ritz value across it, and a gap that closes leaves the residual
# bound. That solve now takes 28 products and is 4e-5 off. End to end (``python
# benchmarks/bench_tracker_misses.py``, 340 warm measurements of fourteen fits) it cost 0-2
# products on the median of a fit and left one miss, where the chains without it had one or
# two: MNIST-1D seed 1 step 1000, 2.9e-3 low, a top Ritz vector 92% v2 (residual twice the
# tolerance, gap 0.39 narrowed to 0.088 by the second pair's residual of 0.30) while 20% of
# v1 sat in the second Ritz vector. The quadratic bound is right about the eigenvalue nearest
# theta_1 (lambda_2); nothing bounds one above the top Ritz value. "Trusting a gap" would have
# kept the second pair open, but warm solves skip it (its cost, below).

# Trusting a gap (cold starts). From random vectors the top Ritz vector can be a mix of v1 and
# v2 while the basis lacks the other mix: the Ritz value below then sits far off, near lambda_3,
# with a large residual, the gap looks large and a value several tol off is accepted (the gap is
# an estimate of the distance to the rest of the spectrum only once the Ritz values are;
# Parlett, The Symmetric Eigenvalue Problem, ch. 11). So in a cold solve a wanted pair accepted
# by its quadratic bound alone (its residual above the tolerance) keeps the pair below it open
# until that pair's residual is at most _TRUSTED_GAP times the gap between them (or meets its
# own tolerance). Inside a real top cluster (top four within 1.9%, the top two within 0.4%;
# ``python benchmarks/bench_cold_cluster.py``, sigmoid MLP, 53 parameters, 60 seeds for each k =
# 1, 2, 3) converged solves more than tol off: 5, 14 and 7 before both rules (2, 9 and 4 of them
# mixes, more than tol from every eigenvalue), 4, 10 and 2 with the far side alone, 1, 2 and 1
# with both (none a mix: lambda_2 itself, whose residual meets tol * theta_1 outright; for k = 2
# and 3 v1 was in the basis, 20-29% of the second Ritz vector, whose residual interval did not
# reach the top), for 14-17 products instead of 13-14. ``bench_cold_start.py`` with both rules
# (run of 2026-12-02): the six-cluster spectra of part (a) 2 misses of 300 (10 before) for a
# median of 37 products (33), part (b) lambda_3 never off (1 of 20) for 32 (30), part (c) from k
# vectors 3, 4 and 0 (7, 4 and 1), from k + 1 none. Warm starts are left out: their pair below
# is no stray mix, and the rule raised the median of a tracked digits fit from 24 to 37
# products. For the top pair alone, at 0.3 of the gap, it would catch the kind of end-to-end
# miss that is left (see "The gap's far side"). Two forms were measured on 2026-12-02 by
# replaying, on the same blocks and probes, every warm measurement of ``python
# benchmarks/bench_tracker_misses.py`` and of its ``--new-seeds`` (653; 313 of them on fits no
# rule was tuned on), where the solver as it is misses twice (MNIST-1D seed 1 step 1000,
# 2.9e-3, and seed 11 step 400, 1.1e-2; each a top Ritz vector of v2, with v1 in the second):
# * the second pair kept open inside the loop, like the cold rule (scratch measurements, not
#   in the scripts): 0 misses, 1.3 more products on average (+0 to +2 on a MNIST-1D fit's
#   median, -1 to +6 on a digits fit's); on synthetic warm blocks (dimension 300, top five
#   within 5%, v1 as 5-10% of a block column that mixes it with the bulk, 800 solves) 8
#   misses became 4, three of them new: solves that took another path, stopped sooner and
#   lost v1;
# * applied only where the solve would otherwise stop (the second pair's residual added,
#   again, until it is within 0.3 of the gap or the top pair meets its tolerance outright): 0
#   misses for 1.3-1.6 more products on average (+0 to +2 on a MNIST-1D fit's median, +0 to
#   +6 on a digits fit's; the main job's fit: 27 to 30). The path up to the stop is the
#   same, the basis only grows and restarts keep the top Ritz vector, so theta_1 never ends
#   lower on the same block (``tests/test_eigensolver.py``; over the same 800 synthetic
#   solves, scratch, none lower and the 8 misses unchanged: lambda_2 met its tolerance
#   outright, residual 0.1-0.5 of tol * theta_1, while v1 sat in pairs below that had met
#   ``rest_tol``).
# The second form is in the solver, off: ``_TRUSTED_GAP_WARM = 0.3`` turns it on. ``python
# benchmarks/bench_tracker_misses.py --replay-warm-gap 0.3`` (with or without
# ``--new-seeds``) replays every warm measurement with it; ``--warm-gap 0.3`` fits with it.
# On in its own chains it missed about as often as the solver without it (1 of 340 and 1 of
# 313): 0 of 340 and 1 of 313 (MNIST-1D seed 7, step 1400, 5.1e-3) on 2026-12-03, and 1 of
# 340 (the digits example at lr 0.5, step 400, 1.2e-2) before commit d618d2d moved the
# chains, each miss with v1 in neither of the top two Ritz vectors; and ``bench_tracking.py
# --warm-gap 0.3`` counted a warm median of 30 products (27), +52-53% inside the fits (45%).
# The chains of warm starts reach other blocks, some of them without v1, so the rule moves
# misses rather than ends them; hence off.
_TRUSTED_GAP = 0.1
_TRUSTED_GAP_WARM = None

# The random vector's pair (no constant). A warm start's random vector is the solve's only way to
# a top eigenvector that the block lacks, but nothing made the solve take a Krylov step from it:
# its pair sinks below the guard as soon as the block's residuals add pairs above it. On a
# rank-deficient Hessian (a 265-parameter regressor far past the edge of stability, rank 6, a
# new top eigenvalue 3.04 orthogonal to the block of v2..v4) the random vector is almost all null
# space: its pair sits at 0 with a residual that is (almost exactly) 3.04 * <v1, x> * v1, while
# the block's pairs, the guard (v5) and v6 converge after two expansions, and lambda_2 was
# returned as the sharpness, converged. So, until the first thick restart, the pair holding
# most of the random columns is kept open until its residual has been added once, unless its
# residual already meets the sharpness tolerance (tol * theta_1: the guard's looser test,
# _GUARD_TOL times theta_k, let through a random vector whose residual, lambda_1 <v1, x> v1,
# was small only because <v1, x> was). On a spectrum
# built like it (``python benchmarks/bench_far_past_edge.py``, part (a); dimension 1500) 46 of
# 50 seeds were wrong before, 1 now: a random vector with almost no v1 in it stays a miss.
# Past a restart the rule lapses (the restart keeps the top 2k + 2 pairs only), which keeps
# it free on the tracked digits fit: every measurement of ``bench_tracking.py`` used the same
# products as before; kept alive through restarts, it added products there. Its cost is on
# solves that accept before a restart; the misses of
# ``bench_guard.py`` are unchanged at the default guard tolerance. When that pair is itself a
# guard it must pass both tests, the guard's and this one: it used to pass the guard's alone,
# and once the guards reached the fourth pair, a two-column warm block of exact eigenvectors
# v2, v3 of a 5 x 5 matrix whose eigenvalues all lie within 1% had k=2 return lambda_2, before
# and after that change (``test_the_random_vector_s_pair_as_a_guard`` fails at commits 8056d8b
# and 067953b); ``bench_guard.py`` at the default tolerance is unchanged (over the tail bulk at
# 8e-2, k=3 misses 3 blocks instead of 7).

# Guards down to the fourth pair: the guard pairs reach at least the fourth Ritz pair (index 3),
# whatever k; for the default k=3 that is the one guard below the wanted pairs. With k=1 the
# one guard was the second pair, and a near-degenerate top three let the Krylov space settle
# on v2 and v3 before it held v1: cold k=1 solves on the Hessian of a 27-parameter sigmoid MLP
# (top eigenvalues 1.764, 1.733, 1.694) returned lambda_2, converged, for some seeds
# (``test_k1_cold_solves_do_not_settle_on_lambda_2_of_a_near_degenerate_top_three`` in
# ``tests/test_eigensolver.py`` fails with a single guard). Guards down to the third pair fixed
# that, but a two-column warm block inside the edge-of-stability cluster still let k=2 accept
# lambda_2: ``python benchmarks/bench_guard.py --k 2`` (block: the first two columns of each
# adversarial block) missed 11 of 48 over the uniform bulk and 10 of 48 over the tail at the
# default guard tolerance; down to the fourth pair, 1 and 0, for a median of 19.5 products
# instead of 18 (18 instead of 16 over the tail). ``--k 1``: no miss either way, 21.5 products
# instead of 18 (19.5 instead of 17). (Those were the runs of 2026-11-30; with the probe rules
# and gap rules since, the run of 2026-12-03 gives k=2 0 and 0 misses for 19 and 18 products,
# k=1 0 and 0 for 24 and 20.) Cold solves of a cluster one wider than k (``python
# benchmarks/bench_cold_start.py``, part (c), k + 1 start vectors, k = 1-3 pooled): the one miss
# left at each of the three spacings is gone. k=1 and k=2 now cost about what k=3 does on the
# tracked digits fit (``python benchmarks/bench_certify.py``, its sweep of k), so they buy
# fewer columns, not fewer products.
_MIN_GUARD_INDEX = 3

# The bottom's neighbours. The most negative eigenvalue (``compute_min``) is judged by its
# residual, ``||r|| <= tol * max|theta|``, which proves that *an* eigenvalue lies that close,
# not the lowest: with a few negative eigenvalues within some tol * radius of each other, or a
# warm ``min_start`` along another eigenvector, the bottom Ritz pair converged on one above the
# minimum and said so (``python benchmarks/bench_min_eigenvalue.py`` at commit 067953b: 18 of 40
# solves of ten negative eigenvalues within 0.01, 10 of 140 tracker-like measurements of a tiny
# sigmoid MLP; 0 and 4 with the rules below, at 1-6 more products, and 0 and 3 since the
# restarts keep the bottom Ritz vector, see below). Two rules, the bottom's counterparts of the
# reach and top-residual rules: the _BOTTOM_NEIGHBOURS pairs above the bottom one stay open
# while their residual interval reaches below the bottom Ritz value minus the tolerance, and the
# bottom pair's residual is added to the basis before the solve accepts, unless it was since the
# bottom Ritz value last moved by more than _BOTTOM_SETTLED of the tolerance. A stale
# ``min_start`` along another negative eigenvalue still passed in 21 of 40 solves: the top
# solve's thick restarts had dropped everything below it. They now keep the bottom Ritz vector
# when the minimum is asked for (0 of 40; a start block holding the exact minimum eigenvector,
# returned as the eigenvalue above it in 35 of 40 solves of ``bench_start_blocks.py``, part
# (b), 0), at no product and no change to a solve without ``compute_min``.
_BOTTOM_NEIGHBOURS = 2
_BOTTOM_SETTLED = 1e-2

# Wide start blocks (no constant): with a start block of w > k columns, the Ritz pairs k+1 to
# w+1 (counted from the top) are all guards, the last of them the first pair below the block.
# Exact eigenvectors v2..v5 passed as the block for k=3 made the single guard the exact pair
# v5 (residual 0, accepted at once) while the random vector's pair, the only way to v1, was
# never expanded: lambda_2 returned as the sharpness, converged, for 19-20 of 20 seeds
# (likewise v2..v3 for k=1), after 4-7 products; now 0-2 of 20, as for width-k blocks
# (``python benchmarks/bench_exact_blocks.py``, here and at commit 4056cb0). A guard by
# position below the block was not enough: the random vector's pair climbs above the
# block's lower pairs after one expansion. The package's own warm starts are k wide (the
# tracker's and a warm refit's eigenvectors).

# The probe (no constant). Inside a top cluster a few percent wide, a warm block that holds
# only part of v1 (squared overlap 0.07-0.65 in the misses of bench_probe.py's runs of
# 2026-11-30) can converge on lambda_2 or lambda_3, and the random vector, whose v1 share is
# about 1/dim, rarely helps. The tracker passes the full-batch gradient at the measured point
# as the probe, in the random vector's place, each parameter tensor's part scaled to unit norm
# (`_tracking.gradient_probe`). ``python benchmarks/bench_tracker_misses.py`` (every warm
# measurement of fourteen tracked fits against a tight solve, 340 in all) counted 8 misses
# (sharpness more than 1e-3 off, converged) with the random vector (commit 49a199b, largest
# 1.7e-2), 4 with the unscaled gradient (largest 3.0e-2; commit d0775fa) and 1 with the scaled
# one (1.6e-3; another, 2.9e-3, with the gap rules, see "The gap's far side"), for about the
# same products (per-fit medians within one of the unscaled gradient's, but 14 against 10 on
# MNIST-1D with tanh and cross-entropy and 24 against 17 for breast cancer's one warm
# measurement). The scaling is for fits whose gradient is far larger
# on one layer than on another: a sigmoid MLP run away to a loss of 1e82 (iris, 10 times the
# threshold) had a gradient 1e40 times larger on its output layer than on its first, and the
# Krylov space never saw the first layer, where v1 lay (1.98 returned, converged, for 422.6;
# ``test_a_run_away_fit_keeps_its_first_layer_in_the_warm_probe``). ``python
# benchmarks/bench_probe.py`` replays the warm measurements of seven of those fits with each
# start vector on the same blocks. The probe inherits the random vector's pair rule. Nothing
# guarantees that the gradient holds v1 (it held none at the first measurements of the MNIST-1D
# fits, where the block did); the random vector's share of v1 guaranteed little more. An
# alternating sum of the last gradients (a filter peaked at 2/lr, free of products) holds less
# of v1 than the gradient and missed as often on the same blocks (``python
# benchmarks/bench_gradient_blocks.py``, with ``--mnist1d SEED``; docs/benchmarks.rst).


# Repeated eigenvalues (no constant). One residual per iteration explores the Krylov space of
# the start block, and a repeated eigenvalue has as many eigenvectors as copies: each copy must
# come from a start vector, the expansion does not pursue one whose share of the basis is
# small, and the thick restarts, which keep the top 2k + 2 Ritz vectors, can drop it. A
# symmetric 200 x 200 matrix with lambda_1 = 1 three times above a bulk uniform in [0, 0.9],
# k=3, tol 1e-3 and rest_tol None, started from three random columns: two copies and the top
# of the bulk came back, converged, for 10 of 20 seeds (10% off); with lambda_1 four times,
# k=4, 15 of 20, and 2 of 20 cold. So
# when the returned eigenvalues hold a repeated value (two within the tolerance of each other)
# above one lower by more than its tolerance, the solve looks for an eigenvalue above that
# lower one beside the returned eigenvectors: a k=1 solve of the operator compressed to
# their orthogonal complement, ``(I - UU^T) H (I - UU^T)`` (their own span moved below the
# lowest by the spectral radius, see `_eigenvalue_beside`). What it finds above the lowest
# returned eigenvalue joins the basis and the solve goes on; otherwise the result stands. Its
# products count in the solve's. ``python benchmarks/bench_repeated.py``: no such miss now, for
# up to 17 more products (median) where the look runs, and the same products as before on
# spectra without repeated eigenvalues. Tracker measurements (rest_tol 0.1) meet the test only
# when lambda_1 and lambda_2 lie within tol of each other and lambda_3 more than 10% below: on
# the tracked fits of ``bench_tracker_misses.py``, once in 340 measurements; but at every one
# of a depth-1 binary classifier under MSE, whose eigenvalues all come twice (a median of 22
# products per measurement instead of 9, the same script).


def _repeated_above_lower(theta, tols):
    """The lowest value that the eigenvalues ``theta`` (descending) hold twice (two within
    the tolerance of each other, ``tols[i] * |theta_i|``, the tighter of the two) above the
    last one, which lies more than its own tolerance below it; None if there is none. A copy
    of that value may be missing in the last one's place."""
    # a zero's tolerance is relative to the largest, as everywhere (see _ZERO_FLOOR): relative
    # to 0 itself, two zeros 1e-16 apart were not "the same", and a third zero lost by the
    # basis never looked for (a negative value returned in its place, converged; audit E of
    # session 37)
    magnitude = np.abs(np.asarray(theta, dtype=np.float64))
    scale = np.maximum(magnitude, _ZERO_FLOOR * (magnitude.max() if magnitude.size else 0.0))
    required = np.asarray(tols, dtype=np.float64)[:len(theta)] * scale
    for i in range(len(theta) - 3, -1, -1):
        if (theta[i] - theta[i + 1] <= min(required[i], required[i + 1])
                and theta[i + 1] - theta[-1] > required[-1]):
            return float(theta[i + 1])
    return None


class _Complement:
    """The operator restricted to the orthogonal complement of the columns of ``U``, with
    ``U``'s own span at ``shift``: ``(I - UU^T) H (I - UU^T) + shift * UU^T``. Beside ``U`` its
    eigenpairs are those of the compression; a shift below the eigenvalues of interest keeps
    ``U``'s directions from showing up as eigenvalues 0 above a negative spectrum."""

    def __init__(self, operator, U, shift):
        self.operator, self.U, self.shift = operator, U, shift
        self.dim, self.dtype, self.device = operator.dim, operator.dtype, operator.device

    def matmat(self, V):
        coefficients = self.U.T @ V
        HW = self.operator.matmat(V - self.U @ coefficients)
        return HW - self.U @ (self.U.T @ HW) + self.U @ (self.shift * coefficients)


def _eigenvalue_beside(operator, U, repeated, lowest, gap, radius, budget, generator, start=None):
    """Look for a copy of the eigenvalue ``repeated`` beside the columns of ``U``, which hold
    its copies found so far and, lowest, an eigenvalue ``lowest``: a k=1 solve of
    `_Complement` within ``budget`` products, whose top counts as found above ``lowest + gap``.

    The solve only has to tell a copy from what lies below ``lowest``, so its tolerance is
    half the distance between the two, relative (between 1e-3 and 0.1), and it starts from
    ``start``, the Ritz vectors next below ``U`` (the best the basis holds beside it): from
    random vectors alone (commit ed90a33: ``git archive ed90a33 sklearn_eos`` and run
    ``bench_repeated.py`` against it) its rows took 0-11.5 more products (median). Its guards
    stay, as in any solve that must not settle on what its start already holds. At the
    tolerance of the eigenvalues themselves the look resolved the top of what lies below for
    nothing, and a small one (1e-4 under a lowest of 0.3) below float32's rounding floor,
    which left an exact result unconverged.
    ``U``'s span goes ``radius`` (the spectral radius seen so far) below ``lowest``, which keeps
    the compressed operator's radius that of the operator, its rounding and its zeros'
    tolerance on that scale (with ``U`` just below ``lowest = 0``, a null space's solve spent
    its whole budget), within the dtype's range.

    Returns ``(x, n_products, converged)``: ``x`` the unit vector (orthogonal to ``U``) of the
    eigenvalue found, or None; ``converged`` whether the look's solve met its tolerance (False,
    with no product spent, when no budget is left).
    """
    if operator.dim <= U.shape[1]:  # nothing beside U
        return None, 0, True
    if budget < 1:
        return None, 0, False
    if start is not None and start.shape[1] + 1 > budget:  # its start is multiplied whole
        start = start[:, :budget - 1] if budget > 1 else None
    tol = min(max(0.5 * (repeated - lowest) / max(abs(repeated), abs(lowest)), 1e-3), 0.1)
    limit = torch.finfo(operator.dtype).max / 8
    shift = max(lowest - max(gap, radius), min(lowest - gap, -limit))
    result = top_eigenpairs(_Complement(operator, U, shift), 1, start=start, tol=tol,
                            max_products=budget, generator=generator)
    found = result.eigenvalues[0] > lowest + gap
    return result.eigenvectors[:, 0] if found else None, result.n_products, result.converged


def _as_block(start, operator):
    """A warm start as a (dim, m) tensor in the operator's dtype and device."""
    if isinstance(start, np.ndarray):
        # a copy: ascontiguousarray keeps a (1, 1) view with a negative stride (numpy calls it
        # contiguous), which torch refuses (eigh's reversed columns at dim 1; audit E of session 37)
        start = np.array(start, order="C", copy=True)
    # detached: a block computed with autograd (a gradient taken with create_graph=True)
    # failed deep in the solver ("Can't call numpy() on Tensor that requires grad")
    S = torch.as_tensor(start).detach()
    if S.is_complex():  # torch's cast drops the imaginary part with a generic warning
        raise ValueError(f"a start block must be real; got {S.dtype} (the operator is symmetric and real).")
    S = S.to(dtype=operator.dtype, device=operator.device)
    if S.ndim not in (1, 2) or S.shape[0] != operator.dim:
        raise ValueError(f"a start block must have shape ({operator.dim},) or ({operator.dim}, m), the "
                         f"operator's dimension first; got {tuple(S.shape)}.")
    return S.reshape(operator.dim, -1)


def _as_probe(probe, start, operator):
    """A probe as a (dim,) tensor in the operator's dtype and device; None for a zero one."""
    if probe is None:
        return None
    if start is None:
        raise ValueError("probe takes the place of the random vector added to a warm start: pass "
                         "start too (a cold start is k + 1 random vectors)")
    if isinstance(probe, np.ndarray):
        probe = np.array(probe, order="C", copy=True)  # see _as_block
    p = torch.as_tensor(probe).detach()
    if p.is_complex():
        raise ValueError(f"probe must be real; got {p.dtype}.")
    p = p.to(dtype=operator.dtype, device=operator.device)
    if p.shape != (operator.dim,):
        raise ValueError(f"probe must have shape ({operator.dim},), the operator's dimension; got "
                         f"{tuple(p.shape)}.")
    if not bool(torch.isfinite(p).all()):
        raise ValueError("probe contains NaN or infinite values.")
    return p if bool(p.any()) else None


def _is_count(value):
    return is_int(value) and value >= 1


def _is_tolerance(value):
    return is_real(value) and value >= 0  # NaN is not


def top_eigenpairs(operator, k=3, *, start=None, tol=1e-3, rest_tol=None, max_products=300,
                   compute_min=False, min_start=None, generator=None, probe=None):
    """Largest algebraic eigenpairs of a symmetric operator by Krylov / Rayleigh-Ritz from a block.

    Parameters
    ----------
    operator : object
        Symmetric linear operator with ``dim``, ``dtype``, ``device`` and ``matmat(V)``
        (``V`` of shape (dim, m)), e.g. :class:`~sklearn_eos.curvature.FullBatchHessian` or
        :class:`MatrixOperator`.
    k : int, default=3
        Number of top eigenpairs (clipped to ``dim``).
    start : torch.Tensor or np.ndarray of shape (dim, m) or (dim,), optional
        Warm-start block, typically the previous top eigenvectors (of a nearby operator:
        without such vectors leave it None, since a block of random vectors is solved as a
        warm start, at fewer products and less safely than a cold one; see
        ``EigenResult.converged``); random vectors are added (one, or up to k + 1 columns in
        all). Its columns cost one product each. A block wider than k is checked down to its
        last column (every Ritz pair from the (k+1)-th to there is a guard), so extra columns
        cost products rather than save them. Columns that are zero, in the span of the others,
        or hold NaN or inf are left out, and random ones make the block up to k; a block with
        no other column is a cold start (as None; ``probe`` unused). None starts from ``k + 1``
        random vectors (``k`` within a budget of ``k`` products or fewer).
    tol : float, default=1e-3
        Relative accuracy on each of the k returned eigenvalues, judged by the residual bound
        ``min(||r||, ||r||^2 / gap) <= tol * |theta|`` (gap estimated from the Ritz values).
        All k must converge, so the cost grows when lambda_k is close to lambda_{k+1}. The
        bound is never taken below the rounding floor ``resolvable_tol(dtype) * max|theta|``:
        a tolerance below it (1e-7 in float32; or, in float32, 1e-3 of a sharpness next to an
        eigenvalue over 2,100 times larger in magnitude) ends the solve, unconverged, once the
        bound reaches the floor. An
        eigenvalue below 1e-3 times the largest of the k in magnitude (the zero eigenvalues of a
        rank-deficient Hessian) has no relative accuracy: it is judged against ``tol`` times
        that, or the rounding floor where that is larger; when even the largest is within ten
        rounding floors of zero, all k are zeros, judged against ``tol * 1e-3 * max|theta|``
        (see ``spectral_radius`` in the result; as a sharpness, such a top is not certified:
        the tracker and ``measure_sharpness`` report it unconverged).
    rest_tol : float, optional
        A looser accuracy for eigenvalues 2..k (default: ``tol``). At the edge of stability
        lambda_3 often sits within 0.5% of lambda_4, and resolving it to 1e-3 costs two to three times
        as many products as the sharpness alone (``benchmarks/bench_sharpness.py``); the
        looser block still serves as the next warm start and for subspace rotation.
    max_products : int, default=300
        Budget of operator-vector products for the top pairs; ``compute_min`` may spend as much
        again. The start (the block and its random vectors, or the ``k + 1`` random vectors of a
        cold start) is multiplied whole even where it alone exceeds the budget, and so is a
        ``min_start``. When the k eigenvalues found hold a repeated value above a lower one,
        a solve beside them looks for a lost copy of it, from the same budget (see
        "Repeated eigenvalues" in ``sklearn_eos/_eigensolver.py``); a look that runs out of it
        leaves the result unconverged.
    compute_min : bool, default=False
        Also compute the most negative eigenpair, continuing from the same Krylov basis, to
        ``tol`` relative to the spectral radius (``||r|| <= tol * max|theta|``: the bottom of a
        Hessian spectrum touches a dense bulk, where only the residual bound is reliable). The
        residual proves that *an* eigenvalue lies that close; the two pairs above the bottom
        one, a last step from the bottom residual (see "The bottom's neighbours") and the
        bottom Ritz vector kept through the top solve's restarts make it rarely one above the
        minimum (``python benchmarks/bench_min_eigenvalue.py``: 6 of 480 solves, all inside
        negative clusters or tiny MLPs, at most 2.9 times the tolerance). Pass a previous
        minimum as ``min_start``.
    min_start : torch.Tensor or np.ndarray of shape (dim,) or (dim, m), optional
        Warm start for the most negative eigenvector (e.g. the previous one); see above.
        Used only with ``compute_min=True``, but checked either way.
    generator : torch.Generator, optional
        Source of the random start vectors (CPU generator), for reproducibility.
    probe : torch.Tensor or np.ndarray of shape (dim,), optional
        With ``start`` only: a vector that takes the place of the random vector added to the
        block, with its privileges (its Ritz pair is expanded before the solve accepts). The
        tracker passes the full-batch gradient (each parameter tensor's part scaled to unit
        norm), which at the edge of stability leans towards the top eigenvectors that GD
        oscillates along (see "The probe"). A zero probe, or one
        in the span of the block, leaves the random vector in place.

    Returns
    -------
    EigenResult
    """
    if not _is_count(k):
        raise ValueError(f"k must be an int of at least 1, got {k!r}")
    # tol=None became NaN and was accepted at once; arrays and strings failed deep inside
    if not _is_tolerance(tol):
        raise ValueError(f"tol must be a number >= 0, got {tol!r}")
    if rest_tol is not None and not _is_tolerance(rest_tol):
        raise ValueError(f"rest_tol must be a number >= 0 or None, got {rest_tol!r}")
    if not _is_count(max_products):
        raise ValueError(f"max_products must be an int of at least 1, got {max_products!r}")
    if generator is not None and not isinstance(generator, torch.Generator):
        raise ValueError(f"generator must be a torch.Generator or None, got {generator!r}")
    if operator.dim < 1:
        raise ValueError("the operator has dimension 0: it has no eigenvalues")
    probe = _as_probe(probe, start, operator)
    if start is not None:
        S = _as_block(start, operator)
        if not bool((torch.isfinite(S).all(dim=0) & S.ne(0).any(dim=0)).any()):
            # no usable column (all zero, NaN or inf): all random, so a cold start, with its
            # rules; solved as a warm one, its wrong 'converged' results were 3.5 times as
            # many (59 against 17 of 150 on a tight cluster; audit E of session 37)
            start = probe = None
    # checked whether or not it is used: a wrong one passed silently without compute_min
    min_block = None if min_start is None else _as_block(min_start, operator)
    k = min(int(k), operator.dim)
    space = _Subspace(operator)
    rand = lambda m: torch.randn(operator.dim, m, generator=generator,  # noqa: E731
                                 dtype=operator.dtype).to(operator.device)
    if start is None:
        # the extra vector within the budget; past dim, extra vectors drop out
        space.extend(rand(max(k, min(k + _COLD_EXTRA_VECTORS, max_products))))
    else:
        n_random = max(_N_RANDOM_WITH_START, k + 1 - S.shape[1])  # block of at least k + 1
        if probe is None:
            space.extend(torch.cat([S, rand(n_random)], dim=1))
        else:  # the probe in the first random vector's place ("The probe")
            W = torch.cat([S, probe[:, None], rand(n_random - 1)], dim=1)
            if space.extend(W) < W.shape[1]:
                space.extend(rand(1))  # a column in the span of the others: the random vector after all
        # a rank-deficient block (zero or repeated columns) left fewer than k columns: random
        # ones up to k, as a cold start has whatever the budget (a budget smaller than k
        # returned fewer than k pairs, and a tracker's rotation metrics failed on them)
        while space.size < k:
            n_random += space.extend(rand(k - space.size))
    # a start block wider than k: guards down to the first pair below it ("Wide start blocks");
    # and guards down to the fourth pair at least ("Guards down to the fourth pair")
    guard_index = max(k if start is None else max(k, space.size - n_random), _MIN_GUARD_INDEX)
    tols = np.array([tol] + [tol if rest_tol is None else rest_tol] * (k - 1))
    random_columns = None if start is None else list(range(max(0, space.size - n_random), space.size))
    for looks in range(k + 1):  # a look adds a copy at most, and k are enough
        theta, U, converged, at_floor = _solve(space, lambda n: list(range(min(k, n))), k, tols,
                                               max_products, generator, guard=True, cold=start is None,
                                               guard_index=guard_index, random_columns=random_columns,
                                               keep_bottom=compute_min)
        repeated = _repeated_above_lower(theta, tols) if converged else None
        if repeated is None:
            break
        if looks == k:  # k copies added and still a lower value under a repeated one
            converged = False
            break
        # a repeated eigenvalue may have copies that the basis lost ("Repeated eigenvalues"):
        # look for one above the lowest returned eigenvalue by more than its tolerance (a
        # zero's: 1e-3 of the largest, see _ZERO_FLOOR) and the rounding floor, keeping a
        # product for what the look finds
        random_columns = None
        radius = np.max(np.abs(theta))
        gap = (tols[-1] * max(abs(theta[-1]), _ZERO_FLOOR * radius)
               + resolvable_tol(operator.dtype) * radius)
        theta_all, Y_all = space.ritz()  # the look starts from the next two Ritz vectors
        beyond = space.vectors(Y_all[:, k:k + 2]) if len(theta_all) > k else None
        missed, n_used, certain = _eigenvalue_beside(operator, U, repeated, theta[-1], gap, radius,
                                                     max_products - space.n_products - 1, generator,
                                                     start=beyond)
        space.n_products += n_used
        if missed is None or space.extend(missed[:, None]) == 0:
            converged = missed is None and certain
            break
    result = EigenResult(eigenvalues=np.asarray(theta, dtype=np.float64), eigenvectors=U,
                         n_products=space.n_products, converged=converged, spectral_radius=space.radius,
                         at_rounding_floor=at_floor)
    if compute_min:
        if min_block is not None:
            space.extend(min_block)
        theta_min, u_min, min_converged, min_at_floor = _solve(
            space, lambda n: [n - 1], 1, tol, space.n_products + max_products, generator,
            interior=True)
        result.min_eigenvalue = float(theta_min[0])
        result.min_eigenvector = u_min[:, 0]
        result.n_products = space.n_products
        result.converged = converged and min_converged
        result.at_rounding_floor = at_floor or min_at_floor
        result.spectral_radius = space.radius
    return result
