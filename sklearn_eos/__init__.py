"""sklearn-eos: scikit-learn estimators trained by full-batch gradient descent at the edge of stability."""

from ._base import EoSClassifier, EoSRegressor
from ._callbacks import DivergenceGuard, LossGoal, LRSchedule, ProgressReport
from ._tracking import SharpnessTracker
from ._losses import HalfSquaredError
from ._modules import MLP
from ._net import FullBatch, FullBatchNet

__all__ = [
    "EoSClassifier",
    "EoSRegressor",
    "FullBatch",
    "FullBatchNet",
    "HalfSquaredError",
    "MLP",
    "LRSchedule",
    "DivergenceGuard",
    "LossGoal",
    "ProgressReport",
    "SharpnessTracker",
]
__version__ = "0.1.0"
