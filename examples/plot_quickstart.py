"""
Quickstart: an edge-of-stability classifier in a Pipeline
=========================================================

The ten-line usage of sklearn-eos. An `EoSClassifier` is a scikit-learn estimator that
trains a PyTorch MLP by exact full-batch gradient descent and records, while it trains,
the sharpness (largest eigenvalue of the training-loss Hessian) against the stability
threshold 2/lr. Here it sits in a ``Pipeline`` after a ``StandardScaler``, is fitted on
scikit-learn's digits and scored on a held-out split; the recorded histories are read as
pandas DataFrames (`histories_to_frames`) and plotted (`SharpnessDisplay`).
"""

import os

from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from sklearn_eos import EoSClassifier, SharpnessDisplay, histories_to_frames

QUICK = os.environ.get("SKLEARN_EOS_QUICK") == "1"  # the docs gallery's quick mode

X, y = load_digits(return_X_y=True)
X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=0.3, random_state=0, stratify=y)

clf = make_pipeline(
    StandardScaler(),
    EoSClassifier(hidden_layer_sizes=(200, 200), loss="mse", lr=0.5,
                  max_iter=200 if QUICK else 600, sharpness_every=50, random_state=0),
)
clf.fit(X_train, y_train)
print(f"test accuracy: {clf.score(X_test, y_test):.3f}")

# %%
# Every fitted history as a DataFrame. The sharpness table has one row per measurement
# (every 50 steps and at the end): the top eigenvalues, the threshold 2/lr they are
# compared with, and the number of Hessian-vector products each measurement cost.
frames = histories_to_frames(clf)
sharp = frames["sharpness"]
print(sharp[["step", "sharpness", "eig_2", "threshold", "above_threshold", "n_hvps"]]
      .round(3).to_string(index=False))

# %%
# Loss, sharpness against 2/lr, and learning rate, with the instability episodes shaded.
disp = SharpnessDisplay.from_estimator(clf, name="digits, MLP 200-200 tanh, MSE, lr 0.5")
