"""
Progressive sharpening and the edge of stability on digits
==========================================================

The phenomenon of Cohen et al. (ICLR 2021), reproduced on scikit-learn's digits: an MLP
64-200-200-10 with tanh, PyTorch default initialisation, trained with the 0.5-sum MSE on
one-hot targets by plain full-batch gradient descent. Gradient descent on a quadratic is
stable only while the sharpness (largest eigenvalue of the training-loss Hessian) stays
below 2/lr. On a neural network the sharpness first *rises* during training (progressive
sharpening) until it reaches 2/lr; it then stops rising and hovers at or just above 2/lr,
while the loss keeps falling, non-monotonically: the edge of stability.

Two learning rates: 0.25 (threshold 2/lr = 8, 700 steps), which starts well below its
threshold and shows the sharpening, and 0.5 (threshold 4), whose threshold is already below the sharpness
at initialisation (about 5.3 on this split), so the net is at the edge of stability from the
first steps (1,500 steps). The sharpness is measured every 50 steps (top-3 eigenvalues, warm-started block
Krylov solver on exact Hessian-vector products).

.. note::
   The numbers quoted in the text are from the full run (``python
   examples/plot_edge_of_stability_digits.py``, 36 s on two otherwise idle CPU cores,
   2026-12-03). The output on this page comes from the documentation build's quick mode,
   which trains for 200 steps at lr 0.25 and 300 at lr 0.5 and measures every 25 steps: it
   shows the sharpening and the start of the edge of stability, not the later steps the text
   describes.
"""

import os

import matplotlib.pyplot as plt
import pandas as pd
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from sklearn_eos import EoSClassifier, RotationDisplay, SharpnessDisplay

QUICK = os.environ.get("SKLEARN_EOS_QUICK") == "1"  # the docs gallery's quick mode
# steps per learning rate: lr 0.25 reaches 2/lr by step ~150 and settles by ~400
N_STEPS = {0.25: 200, 0.5: 300} if QUICK else {0.25: 700, 0.5: 1500}
EVERY = 25 if QUICK else 50

X, y = load_digits(return_X_y=True)
X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=0.3, random_state=0, stratify=y)

fits = {}
for lr in (0.25, 0.5):
    model = make_pipeline(
        StandardScaler(),
        EoSClassifier(hidden_layer_sizes=(200, 200), activation="tanh", loss="mse", lr=lr,
                      max_iter=N_STEPS[lr], sharpness_every=EVERY, n_eigs=3, random_state=0),
    )
    fits[lr] = model.fit(X_train, y_train)
    est = model[-1]
    print(f"lr {lr}: threshold 2/lr = {2 / lr:.1f}, initial sharpness {est.initial_sharpness_:.3f}, "
          f"final loss {est.loss_curve_[-1]:.4f}, test accuracy {model.score(X_test, y_test):.3f}, "
          f"{est.n_instabilities_} loss instabilities, diverged={est.diverged_}")

# %%
# The sharpness table of each run: the measured largest eigenvalue, the threshold 2/lr and
# their ratio. On the full run: at lr 0.25 the ratio climbs from about 0.66 to 1.1 by step
# 150 (progressive sharpening); the first instabilities then swing it below 1 and above it
# once (about 0.87 at step 200, 1.17 at step 250), and from step 300 on it stays above 1,
# by 2-11%, drifting down. At lr 0.5 it is above 1 from the start and stays near it.
# (Run of 2026-11-30, at commit 0944228. Trajectories at the edge of stability follow the
# machine's rounding: earlier runs gave 0.88-0.89, 1.16-1.18 and 1-12%; the pattern is the
# same.)
for lr, model in fits.items():
    table = pd.DataFrame(model[-1].sharpness_history_)[["step", "sharpness", "threshold"]]
    table["ratio"] = table["sharpness"] / table["threshold"]
    print(f"\nlr = {lr}")
    print(table.round(3).to_string(index=False))
    late = table[table["step"] >= N_STEPS[lr] // 2]
    print(f"second half: sharpness median {late['sharpness'].median():.3f}, range "
          f"{late['sharpness'].min():.3f}-{late['sharpness'].max():.3f} (threshold {2 / lr:.1f})")

# %%
# Loss, sharpness against 2/lr, and learning rate, one figure per learning rate. Shaded:
# instability episodes (the loss rose more than 10% above its running minimum). The thin
# purple line is ``update_curvature_``, the curvature of the loss along each GD step, from
# consecutive gradients at no extra Hessian-vector product: near zero while the network
# sharpens below its threshold (the steps follow flat directions; at lr 0.25 its median per
# 100 steps is within 0.01 x 2/lr of zero over the first 200 steps), then, once settled at
# the edge of stability, at 2/lr, below the sharpness, between the measurements: on the
# full run, from step 400 on at both rates, within 6% of 2/lr at every step (0.94-1.04 x
# 2/lr), its median per 100 steps within 1% of 2/lr. Printed in units of 2/lr.
for lr, model in fits.items():
    SharpnessDisplay.from_estimator(model, name=f"lr = {lr} (threshold 2/lr = {2 / lr:g})")
    curvature = pd.Series(model[-1].update_curvature_) / (2 / lr)  # in units of 2/lr
    per100 = curvature.groupby(curvature.index // 100)
    print(f"lr {lr}: update curvature / (2/lr) per 100 steps: median "
          f"{per100.median().round(3).tolist()}, min {per100.min().round(2).tolist()}, "
          f"max {per100.max().round(2).tolist()}")

# %%
# How the top Hessian eigenvectors turn between consecutive measurements (50 steps apart):
# the absolute cosine of the i-th eigenvectors and the overlap of the top-3 eigenspaces (1 = no
# rotation). At the edge of stability the top eigenvalues are nearly degenerate, so
# individual eigenvectors can swap and their cosines drop. The subspace overlap is invariant
# to such swaps, but at the default ``sharpness_tol`` used here eigenvalues 2 and 3 are
# resolved to 10% only and the recorded overlap can be off by several tenths (user guide,
# "Eigenvector rotation"; fit with ``sharpness_tol=1e-5`` to read it); the top-eigenvector
# cosine is accurate, and it is the one read here and printed below. At lr 0.25 the contrast
# is visible in one run (full run): while the network is still sharpening (first 150 steps)
# the top eigenvector keeps its direction (absolute cosine 0.86-0.98); once the sharpness
# sits at 2/lr (from step 300 on) it turns, its cosine mostly below 0.35 (0.03-0.69 in a run
# of 2026-11-30 with two torch threads, 0.004-0.44 in another; 0.02-0.69 in an earlier one)
# between measurements 50 steps apart.
fig, axes = plt.subplots(2, 1, figsize=(10, 6.5), layout="constrained")
for ax, (lr, model) in zip(axes, fits.items()):
    RotationDisplay.from_estimator(model, ax=ax, name=f"lr = {lr}")
for lr, model in fits.items():
    rot = pd.DataFrame(model[-1].rotation_history_)
    print(f"\nlr {lr}: |cos(v1, v1')| between consecutive measurements, by step")
    print(rot[["step", "cosine"]].abs().round(3).to_string(index=False))
    print(f"median |cos(v1, v1')| {rot['cosine'].abs().median():.3f}")
