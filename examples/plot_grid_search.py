"""
Grid search over learning rate and decay time
=============================================

A ``GridSearchCV`` over the learning rate, in units of the stability threshold at
initialisation (``lr_units='threshold'``: 1.0 is exactly 2 / initial sharpness), and over
when the learning rate is decayed, counted in instability episodes
(``decay_on='instabilities'``). One grid then means the same thing whatever the network or
dataset.

Data: scikit-learn's digits (1797 8x8 images), standardized; network: MLP 64-200-200-10 tanh
trained with the 0.5-sum MSE by full-batch gradient descent. The printed table gives the
cross-validated accuracy against the learning rate (in units of the threshold) and the decay
time. A diverged fit (a normal outcome far beyond the threshold) is scored like any other,
with the model of its last finite step: it is not given a failing score by the search, and
its score is whatever that model earns (here, far beyond the threshold, a poor one: see the
table). The search records ``diverged_`` of every fit with a second scorer, and the tables
and the plot show which cells diverged.
"""

import os
import warnings

import matplotlib.pyplot as plt
import pandas as pd
from sklearn.datasets import load_digits
from sklearn.exceptions import ConvergenceWarning
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from sklearn_eos import EoSClassifier

QUICK = os.environ.get("SKLEARN_EOS_QUICK") == "1"  # the docs gallery's quick mode

X, y = load_digits(return_X_y=True)
if QUICK:
    X, y = X[:400], y[:400]

model = make_pipeline(
    StandardScaler(),
    EoSClassifier(hidden_layer_sizes=(200, 200), loss="mse", lr_units="threshold",
                  decay_on="instabilities", decay_factor=0.1, max_iter=100 if QUICK else 300,
                  sharpness_every=0, random_state=0),
)
grid = {
    "eosclassifier__lr": [0.5, 1.0, 2.0, 4.0] if not QUICK else [0.5, 4.0],
    "eosclassifier__decay_time": [None, 1, 4] if not QUICK else [None, 2],
}
# a second metric records whether each fit diverged (est is the fitted Pipeline); the
# search keeps only the best estimator, so diverged_ could not be read afterwards
scoring = {"accuracy": "accuracy", "diverged": lambda est, X, y: float(est[-1].diverged_)}
search = GridSearchCV(model, grid, cv=3, n_jobs=2, scoring=scoring, refit="accuracy")
with warnings.catch_warnings():
    warnings.simplefilter("ignore", ConvergenceWarning)  # the 'diverged' column records them
    search.fit(X, y)

# %%
# The table: rows are learning rates (multiples of 2 / initial sharpness), columns decay
# times (None: never decayed; k: decayed by 10x right after the k-th instability ended).
# Below the threshold (0.5) GD has no instability to count, so the rate is never decayed
# and all decay columns hold the same fits: the decay time only matters where
# instabilities happen.
table = pd.DataFrame(search.cv_results_)
table["decay_time"] = table["param_eosclassifier__decay_time"].map(lambda t: "never" if t is None else t)
table["lr / threshold"] = table["param_eosclassifier__lr"]
scores = table.pivot(index="lr / threshold", columns="decay_time", values="mean_test_accuracy")
diverged = table.pivot(index="lr / threshold", columns="decay_time", values="mean_test_diverged")
print("mean test accuracy (3-fold CV); columns: decay after that many instabilities")
print(scores.round(3).to_string())
print("share of the 3 fits that diverged (1: all)")
print(diverged.round(2).to_string())
print("best:", search.best_params_, f"{search.best_score_:.3f}")

best = search.best_estimator_[-1]
print(f"best fit: initial sharpness {best.initial_sharpness_:.3f}, absolute lr {best.effective_lr_:.4f}, "
      f"{best.n_instabilities_} instabilities, decay at step {best.decay_step_}, diverged={best.diverged_}")

# %%
# The same table as a plot, the threshold at initialisation marked. The accuracy axis spans
# the fits that did not diverge, so that the decay times can be told apart; a cell where at
# least one of the three fits diverged is drawn as a red cross at the bottom edge instead
# (its score, far below the others, is in the table).
labels = {c: "never decayed" if c == "never" else f"decay after {c} instabilit{'y' if c == 1 else 'ies'}"
          for c in scores.columns}
kept = scores.where(diverged == 0)
fig, ax = plt.subplots(figsize=(6, 4))
for column, style, size in zip(scores.columns, ["o-", "s--", "^:"], [9, 6, 4]):
    # the later lines smaller and on top: equal cells (below the threshold) stay visible
    ax.plot(kept.index, kept[column], style, markersize=size, label=labels[column])
ax.set_xscale("log")
ax.set_xlabel("lr / threshold")
ax.axvline(1.0, color="gray", linestyle="--", label="threshold at init")
low, high = kept.min().min(), kept.max().max()
pad = max(0.15 * (high - low), 0.01)
ax.set_ylim(low - 2 * pad, high + pad)
hit = (diverged > 0).any(axis=1)
if hit.any():
    ax.scatter(scores.index[hit], [low - 1.5 * pad] * int(hit.sum()), marker="x", s=80, color="tab:red",
               zorder=3, clip_on=False, label="diverged (1 or more folds; score in the table)")
ax.set_xticks([], minor=True)  # plain tick labels at the grid's rates, not 6x10^-1 ...
ticks = sorted({*scores.index, 1.0})  # the grid's rates and the threshold
ax.set_xticks(ticks, [f"{lr:g}" for lr in ticks])
ax.set_ylabel("CV accuracy")
ax.legend(fontsize="small")
fig.tight_layout()
