"""
A custom PyTorch module: a small CNN at the edge of stability
=============================================================

`EoSClassifier` trains any ``torch.nn.Module``, not only its default MLP. Pass the *class*
as ``module``: when its constructor accepts ``n_features_in`` and ``n_outputs`` keyword
arguments, the estimator fills them in from the data (64 pixels, 10 classes here), and
``random_state`` seeds the initialisation. The estimator still sees flat 2-D ``X`` (as every
scikit-learn estimator does), so the network reshapes each row into an 8x8 image inside
``forward``.

Data: scikit-learn's digits, standardized per pixel, 70/30 split. Loss: the 0.5-sum MSE on
one-hot targets, full-batch GD. The learning rate is given in units of the stability
threshold at initialisation (``lr_units='threshold'``): ``lr=1.5`` is 1.5 x 2 / initial
sharpness, so training starts beyond the edge of stability and the sharpness must come down
to the new threshold 2/lr and stay near it.
"""

import os

import pandas as pd
from torch import nn
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from sklearn_eos import EoSClassifier, SharpnessDisplay

QUICK = os.environ.get("SKLEARN_EOS_QUICK") == "1"  # the docs gallery's quick mode


class SmallCNN(nn.Module):
    """Two 3x3 convolutions (tanh), 2x2 average pooling, one linear layer."""

    def __init__(self, n_features_in=64, n_outputs=10, channels=8):
        super().__init__()
        self.side = int(round(n_features_in ** 0.5))
        assert self.side ** 2 == n_features_in, "expects square images, flattened"
        self.features = nn.Sequential(
            nn.Conv2d(1, channels, 3, padding=1), nn.Tanh(),
            nn.Conv2d(channels, 2 * channels, 3, padding=1), nn.Tanh(),
            nn.AvgPool2d(2),
        )
        self.head = nn.Linear(2 * channels * (self.side // 2) ** 2, n_outputs)

    def forward(self, x):
        x = x.reshape(-1, 1, self.side, self.side)  # flat rows -> 1-channel images
        return self.head(self.features(x).flatten(1))


X, y = load_digits(return_X_y=True)
X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=0.3, random_state=0, stratify=y)

clf = make_pipeline(
    StandardScaler(),
    EoSClassifier(module=SmallCNN, loss="mse", lr=1.5, lr_units="threshold",
                  max_iter=150 if QUICK else 600, sharpness_every=25 if QUICK else 50,
                  random_state=0),
)
clf.fit(X_train, y_train)
cnn = clf[-1]
n_params = sum(p.numel() for p in cnn.module_.parameters())
print(f"SmallCNN: {n_params} parameters")
print(f"initial sharpness {cnn.initial_sharpness_:.3f} -> applied lr {cnn.effective_lr_:.4f} "
      f"(threshold 2/lr = {2 / cnn.effective_lr_:.3f}); diverged={cnn.diverged_}")
print(f"train accuracy {clf.score(X_train, y_train):.3f}, test accuracy {clf.score(X_test, y_test):.3f}, "
      f"final training loss {cnn.loss_curve_[-1]:.4f}")

# %%
# The sharpness against the threshold. At step 0 it is the initial sharpness, 1.5 x 2/lr
# (the rate was set to 1.5 x the threshold at init); GD cannot stay there, so the
# sharpness falls and then hovers near 2/lr while the loss keeps decreasing. (At 2 x the
# threshold this CNN diverges within 15 steps.)
table = pd.DataFrame(cnn.sharpness_history_)[["step", "sharpness", "eig_2", "threshold"]]
table["sharpness / threshold"] = table["sharpness"] / table["threshold"]
print(table.round(3).to_string(index=False))
print(f"{cnn.n_instabilities_} loss instabilities "
      "(episodes where the loss rose > 10% above its running minimum)")

# %%
# Loss, sharpness against 2/lr, and learning rate of the CNN fit.
disp = SharpnessDisplay.from_estimator(clf, name="SmallCNN on digits, MSE, lr = 1.5 x threshold at init")
