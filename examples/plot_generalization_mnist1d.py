"""
Do learning rates beyond the stability threshold generalize better? (MNIST-1D)
==============================================================================

Wang & Roberts claim that learning rates beyond the stability threshold 2/sharpness, whose
instabilities push the parameters to flatter regions, give networks that generalize
better. This example puts the claim to a small, honest test on MNIST-1D (Greydanus 2020), a
procedurally generated 1-D version of MNIST (10 classes, sequences of length 40; no
download).

The trap to avoid: for a fixed number of steps a larger learning rate simply trains
further, and a better-trained network scores better. So every run here is trained to the
**same training loss** (``loss_goal``): it stops at the first step whose full training loss
is at or below the goal, and ``max_iter`` is a generous cap. Runs that hit the cap without
reaching the goal, or diverge, are reported as such, not silently compared.

Set-up: MLP 40-200-200-10 tanh, 0.5-sum MSE on one-hot targets, full-batch GD, inputs
standardized. The learning rate is given in units of the stability threshold at
initialisation (``lr_units='threshold'``: 1 is exactly 2 / initial sharpness), so the grid
straddles the threshold: 0.5 (below), 1 (at), 1.5, 2 and 2.5 (beyond), 4 (far beyond). Three seeds
per rate (the seed sets the initialisation; the data are fixed).

Budget choices, to run in about two minutes on two CPU cores: the 4,000 generated training
examples are subsampled to 1,000 (test: all 1,000 test examples), and the loss goal is a
moderate 0.3 (initial loss about 0.6), reached in about 250 to 600 steps. With so few
training examples the test accuracy is far below what all 4,000 examples give after a few
thousand steps, and a loss goal nearer zero would separate the runs more; both cost more
than a gallery example may.

.. note::
   The numbers quoted in the text are from this full set-up (``python
   examples/plot_generalization_mnist1d.py``). The output on this page comes from the
   documentation build's quick mode, a smaller set-up: 400 training and 300 test
   examples, rates 0.5, 1, 2 and 4 x the threshold, two seeds, at most 600 steps.
"""

import os
import warnings

import matplotlib.pyplot as plt
import pandas as pd
from mnist1d.data import get_dataset_args, make_dataset
from sklearn.exceptions import ConvergenceWarning
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from sklearn_eos import EoSClassifier

QUICK = os.environ.get("SKLEARN_EOS_QUICK") == "1"  # the docs gallery's quick mode

args = get_dataset_args()
if QUICK:
    args.num_samples = 1500  # 1,200 train / 300 test: generation itself takes seconds
data = make_dataset(args)  # keys: 'x', 'y' (train), 'x_test', 'y_test', 't', 'templates'
N_TRAIN = 400 if QUICK else 1000
X_train, y_train = data["x"][:N_TRAIN], data["y"][:N_TRAIN]
X_test, y_test = data["x_test"], data["y_test"]
print(f"MNIST-1D: {len(X_train)} training / {len(X_test)} test examples, length {X_train.shape[1]}")

LRS = [0.5, 1.0, 2.0, 4.0] if QUICK else [0.5, 1.0, 1.5, 2.0, 2.5, 4.0]  # x threshold at init
SEEDS = [0, 1] if QUICK else [0, 1, 2]
LOSS_GOAL = 0.3
MAX_ITER = 600 if QUICK else 2000

rows = []
for lr in LRS:
    for seed in SEEDS:
        model = make_pipeline(
            StandardScaler(),
            EoSClassifier(hidden_layer_sizes=(200, 200), activation="tanh", loss="mse", lr=lr,
                          lr_units="threshold", loss_goal=LOSS_GOAL, max_iter=MAX_ITER,
                          sharpness_every=0, random_state=seed),
        )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)  # divergence is reported below
            model.fit(X_train, y_train)
        est = model[-1]
        reached = (not est.diverged_) and est.loss_curve_[-1] <= LOSS_GOAL
        rows.append({
            "lr_x_threshold": lr, "seed": seed, "lr": est.effective_lr_,
            "initial_sharpness": est.initial_sharpness_,
            "status": "diverged" if est.diverged_ else ("goal" if reached else "cap"),
            "n_iter": est.n_iter_, "initial_loss": est.loss_curve_[0], "final_loss": est.loss_curve_[-1],
            "n_instabilities": est.n_instabilities_,
            "train_acc": model.score(X_train, y_train), "test_acc": model.score(X_test, y_test),
        })
runs = pd.DataFrame(rows)

# %%
# Every run: absolute rate, whether it reached the goal ('goal'), hit the step cap ('cap')
# or diverged, the steps it took, and its accuracies. (The sharpness is not tracked during
# these runs, ``sharpness_every=0``, to save time; ``lr_units='threshold'`` still measures
# it once at initialisation.)
print(runs.round(4).to_string(index=False))

# %%
# Mean +- standard deviation over seeds, among the runs that reached the goal only.
ok = runs[runs["status"] == "goal"]
summary = ok.groupby("lr_x_threshold").agg(
    n_reached=("seed", "size"), steps=("n_iter", "mean"), steps_std=("n_iter", "std"),
    train_acc=("train_acc", "mean"), test_acc=("test_acc", "mean"), test_acc_std=("test_acc", "std"),
)
summary["diverged"] = runs.groupby("lr_x_threshold")["status"].apply(lambda s: int((s == "diverged").sum()))
print(summary.round(4).to_string())
below = ok[ok["lr_x_threshold"] < 1]["test_acc"]
beyond = ok[ok["lr_x_threshold"] > 1]["test_acc"]
if len(below) and len(beyond):
    print(f"test accuracy at equal training loss: below threshold {below.mean():.4f} +- {below.std():.4f} "
          f"({len(below)} runs), beyond threshold {beyond.mean():.4f} +- {beyond.std():.4f} "
          f"({len(beyond)} runs)")

# %%
# Test accuracy (mean +- std over seeds) against the learning rate in units of the
# threshold; the dashed line is the threshold at initialisation, the red crosses mark
# rates at which runs diverged. Right: the number of steps each rate needed to reach the
# loss goal.
fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4), layout="constrained")
ax1.errorbar(summary.index, summary["test_acc"], yerr=summary["test_acc_std"].fillna(0),
             marker="o", capsize=4, label=f"test accuracy at training loss {LOSS_GOAL}")
diverged_lrs = sorted(set(runs.loc[runs["status"] == "diverged", "lr_x_threshold"]))
low = ax1.get_ylim()[0]
for lr in diverged_lrs:
    ax1.plot([lr], [low], "x", color="tab:red", markersize=10, mew=2,
             label="diverged" if lr == diverged_lrs[0] else None)
ax1.axvline(1.0, color="gray", linestyle="--", label="threshold at init")
ax1.set_xscale("log", base=2)
ax1.set_xlabel("learning rate / (2 / initial sharpness)")
ax1.set_ylabel("test accuracy")
ax1.legend(fontsize="small")
ax2.errorbar(summary.index, summary["steps"], yerr=summary["steps_std"].fillna(0), marker="o",
             capsize=4, color="tab:purple")
ax2.axvline(1.0, color="gray", linestyle="--")
ax2.set_xscale("log", base=2)
ax2.set_xlabel("learning rate / (2 / initial sharpness)")
ax2.set_ylabel(f"steps to training loss {LOSS_GOAL}")
for ax in (ax1, ax2):
    ax.set_xticks([], minor=True)
    ax.set_xticks(LRS, [f"{lr:g}" for lr in LRS])  # every rate of the grid, on both panels
    ax.set_xlim(min(LRS) / 1.15, max(LRS) * 1.15)
    ax.grid(True, alpha=0.3)

# %%
# What this shows, and what it does not. On the full run (1,000 training examples, loss
# goal 0.3, three seeds; not the quick run shown in the documentation) every rate up to
# 2.5 x the threshold reached the goal, larger rates in fewer steps (about 560 steps at
# 0.5 x, 270 at 2.5 x), and 4 x diverged within 15 steps. At equal training loss the test
# accuracy was 0.40 below the threshold, 0.41 at it and 0.39-0.40 beyond it, where it fell
# slightly with the rate (0.402, 0.398 and 0.386 at 1.5, 2 and 2.5 x; standard deviations
# over seeds 0.003-0.025; 0.40 +- 0.02 pooled beyond; run of 2026-12-02). (These figures
# move by about a hundredth from one version of the package, or one machine, to the next:
# the rate is set from the initial sharpness, measured to 1e-3, and a change in its fourth
# digit, or in the rounding of a matrix product, changes the trajectory at the edge of
# stability; an earlier machine's run gave 0.42 at the threshold and 260 steps at 2.5 x.)
# So, at this scale, the claim that rates beyond the threshold
# generalize better is *not* reproduced: the instabilities (counted in
# ``n_instabilities``) are there, but they do not buy test accuracy by the time the
# training loss is 0.3. A fairer test of the claim
# would train much further (to a loss goal near zero, on all 4,000 examples), which is
# beyond the budget of a gallery example.
