"""Rotation metrics on hand-made bases."""

import numpy as np
import pytest
import torch

from sklearn_eos._rotation import eigenvector_cosines, principal_angles, subspace_overlap


def basis(dim=10, k=3, seed=0):
    Q, _ = np.linalg.qr(np.random.default_rng(seed).standard_normal((dim, k)))
    return Q


def test_identical_bases():
    U = basis()
    np.testing.assert_allclose(eigenvector_cosines(U, U), 1.0)
    assert subspace_overlap(U, U) == pytest.approx(1.0)
    np.testing.assert_allclose(principal_angles(U, U), 0.0, atol=1e-7)


def test_swapped_columns_and_sign_flips():
    U = basis()
    V = U[:, [1, 0, 2]] * np.array([-1.0, 1.0, -1.0])
    np.testing.assert_allclose(eigenvector_cosines(U, V), [0.0, 0.0, 1.0], atol=1e-12)
    assert subspace_overlap(U, V) == pytest.approx(1.0)
    np.testing.assert_allclose(principal_angles(U, V), 0.0, atol=1e-7)


def test_orthogonal_subspaces():
    Q = basis(10, 6)
    U, V = Q[:, :3], Q[:, 3:]
    np.testing.assert_allclose(eigenvector_cosines(U, V), 0.0, atol=1e-12)
    assert subspace_overlap(U, V) == pytest.approx(0.0, abs=1e-12)
    np.testing.assert_allclose(principal_angles(U, V), np.pi / 2)


def test_known_rotation_angle():
    a = 0.3
    Q = basis(10, 3)
    U = Q[:, :2]
    V = np.stack([np.cos(a) * Q[:, 0] + np.sin(a) * Q[:, 2], Q[:, 1]], axis=1)
    np.testing.assert_allclose(eigenvector_cosines(U, V), [np.cos(a), 1.0])
    assert subspace_overlap(U, V) == pytest.approx((np.cos(a) ** 2 + 1) / 2)
    np.testing.assert_allclose(principal_angles(U, V), [0.0, a], atol=1e-7)


def test_torch_inputs_and_vectors():
    U = basis()
    Ut = torch.from_numpy(U).float()
    assert subspace_overlap(Ut, U) == pytest.approx(1.0, abs=1e-6)
    cos = eigenvector_cosines(Ut[:, 0], -Ut[:, 0])
    assert isinstance(cos, np.ndarray) and cos.dtype == np.float64
    np.testing.assert_allclose(cos, [1.0], atol=1e-6)
    with pytest.raises(ValueError):
        subspace_overlap(U, basis(11))


def test_principal_angles_keep_their_digits_when_small():
    """Small angles from sines: the arccos of the cosines read 1e-4 rad for a float32
    subspace against itself, and could not see a rotation of 1e-6 rad."""
    gen = torch.Generator().manual_seed(0)
    U = torch.linalg.qr(torch.randn(500, 3, dtype=torch.float64, generator=gen))[0]
    np.testing.assert_allclose(principal_angles(U.float(), U.float()), 0.0, atol=1e-6)
    perp = torch.randn(500, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    perp -= U @ (U.T @ perp)
    W = U.clone()
    W[:, 0] = np.cos(1e-6) * U[:, 0] + np.sin(1e-6) * perp / perp.norm()
    np.testing.assert_allclose(principal_angles(U, W), [0.0, 0.0, 1e-6], atol=1e-12)


def test_overlap_of_subspaces_of_different_widths_divides_by_the_larger():
    """The documented convention: a subspace inside a wider one scores its share of it, in
    either order, and only equal subspaces score 1."""
    Q = basis(10, 3)
    assert subspace_overlap(Q[:, :2], Q) == pytest.approx(2 / 3)
    assert subspace_overlap(Q, Q[:, :2]) == pytest.approx(2 / 3)
    assert subspace_overlap(Q[:, :1], Q[:, 1:]) == pytest.approx(0.0, abs=1e-12)


@pytest.mark.parametrize("metric", [eigenvector_cosines, subspace_overlap, principal_angles])
def test_a_transposed_block_is_refused(metric):
    """A (k, dim) block was read as dim vectors of length k: subspace_overlap(U.T, V.T)
    returned 0.30 without a word (API audit)."""
    U, V = basis(10, 3, seed=0), basis(10, 3, seed=1)
    with pytest.raises(ValueError, match="more columns than rows"):
        metric(U.T, V.T)


def test_small_angles_keep_their_digits_next_to_large_ones():
    """scipy.linalg.subspace_angles (1.17) pairs the sines with the wrong angles when one is
    above 45 degrees: an angle of 1e-9 next to one of 90 degrees read 0 (an audit)."""
    e = np.eye(4)
    for a in (1e-12, 1e-9, 1e-7, 0.3):
        U = e[:, [0, 1]]
        V = np.c_[np.cos(a) * e[:, 0] + np.sin(a) * e[:, 2], e[:, 3]]
        np.testing.assert_allclose(principal_angles(U, V), [a, np.pi / 2], rtol=1e-12, atol=0)
        np.testing.assert_allclose(principal_angles(V, U), [a, np.pi / 2], rtol=1e-12, atol=0)
    # random pairs of subspaces of different widths against an SVD of U^T V (cosines)
    rng = np.random.default_rng(0)
    for _ in range(20):
        U = np.linalg.qr(rng.standard_normal((9, 3)))[0]
        V = np.linalg.qr(rng.standard_normal((9, 2)))[0]
        angles = principal_angles(U, V)
        np.testing.assert_allclose(np.cos(angles), np.linalg.svd(U.T @ V, compute_uv=False), atol=1e-12)
        assert np.all(np.diff(angles) >= 0)


@pytest.mark.parametrize("metric", [eigenvector_cosines, subspace_overlap, principal_angles])
@pytest.mark.parametrize("bad, match", [
    (lambda Q: np.where(np.arange(Q.size).reshape(Q.shape) == 0, np.inf, Q), "NaN or infinite"),
    (lambda Q: np.where(np.arange(Q.size).reshape(Q.shape) == 0, np.nan, Q), "NaN or infinite"),
    (lambda Q: Q * [1.0, 3.0, 1.0], "orthonormal columns"),
    (lambda Q: Q * [1.0, 0.0, 1.0], "orthonormal columns"),
    (lambda Q: Q[:, :0], "empty"),
    (lambda Q: None, "real numbers"),
    (lambda Q: np.float64(1.0), "a \\(dim, k\\) block"),
    (lambda Q: Q[None], "a \\(dim, k\\) block"),
])
def test_inputs_that_are_not_orthonormal_blocks_are_refused(metric, bad, match):
    """An audit: an inf entry read as "no rotation" (cosine 1), a column scaled by 3 likewise
    once the results were clipped to [0, 1], a zero column gave principal_angles one angle
    less than documented and an empty block NaN; None and 0-d inputs raised IndexErrors."""
    Q = basis(dim=6, k=3)
    with pytest.raises(ValueError, match=match):
        metric(bad(Q), Q)
    with pytest.raises(ValueError, match=match):
        metric(Q, bad(Q))
