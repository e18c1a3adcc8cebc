"""sklearn-eos: scikit-learn estimators trained by full-batch gradient descent at the edge of stability."""

from ._base import EoSClassifier, EoSRegressor
from ._callbacks import DivergenceGuard, LossGoal, ProgressReport
from ._display import RotationDisplay, SharpnessDisplay
from ._frames import histories_to_frames
from ._lr_schedule import LRSchedule
from ._tracking import InstabilityTracker, SharpnessTracker
from ._update_curvature import UpdateCurvature
from ._losses import CrossEntropy, HalfSquaredError
from . import curvature
from ._modules import MLP
from ._net import FullBatch, FullBatchNet

__all__ = [
    "EoSClassifier",
    "EoSRegressor",
    "FullBatch",
    "FullBatchNet",
    "HalfSquaredError",
    "CrossEntropy",
    "MLP",
    "LRSchedule",
    "DivergenceGuard",
    "LossGoal",
    "ProgressReport",
    "SharpnessTracker",
    "InstabilityTracker",
    "UpdateCurvature",
    "SharpnessDisplay",
    "RotationDisplay",
    "histories_to_frames",
    "curvature",
]
__version__ = "0.1.0"
