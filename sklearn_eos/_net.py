"""skorch as an exact full-batch gradient-descent engine.

skorch's own training loop runs unchanged (epochs, callbacks, history); what changes is the
data path. One epoch is one GD step on the *whole* training set: the data are turned into
tensors once per fit (`FullBatch`) and every epoch iterates over that single batch, with no
per-step ``Dataset.__getitem__``/collation (which is where skorch spends most of its time with
``batch_size=-1``). When the data are split into chunks to bound memory, the chunk losses
are weighted by chunk size and their gradients accumulated before the one optimizer step, so
the step is still the exact full-batch gradient step.
"""

import torch
from skorch import NeuralNet


class FullBatch(torch.utils.data.Dataset):
    """A training set as prebuilt tensors, split into chunks of at most ``chunk_size`` rows.

    Parameters
    ----------
    X, y : torch.Tensor
        Inputs and targets, already on the training device and dtype.
    chunk_size : int or None
        Rows per forward pass; None is one chunk.

    Attributes
    ----------
    chunks : list of (X_c, y_c)
        Views of ``X`` and ``y``; ``weights[c] = len(X_c) / len(X)``.
    """

    def __init__(self, X, y, chunk_size=None):
        self.n_samples = len(X)
        if chunk_size is None or chunk_size >= self.n_samples:
            self.chunks = [(X, y)]
        else:
            self.chunks = list(zip(X.split(chunk_size), y.split(chunk_size)))
        self.weights = [len(Xc) / self.n_samples for Xc, _ in self.chunks]

    def __len__(self):
        return self.n_samples

    def __getitem__(self, i):
        raise TypeError("FullBatch is consumed whole, one GD step per pass; it is not indexed.")


def full_batch_loss(forward, criterion, data):
    """Full training loss, with its gradient accumulated into ``.grad``.

    One forward and backward per chunk; ``criterion(forward(X_c), y_c)`` is the mean loss
    over the chunk. Returns the detached loss (a 0-d tensor on the data's device).
    """
    total = None
    for (Xc, yc), w in zip(data.chunks, data.weights):
        loss = criterion(forward(Xc), yc)
        if w != 1.0:
            loss = loss * w
        loss.backward()
        total = loss.detach() if total is None else total + loss.detach()
    return total


class FullBatchNet(NeuralNet):
    """A skorch ``NeuralNet`` whose every epoch is one exact full-batch GD step.

    Fit it with a `FullBatch` as ``X`` (``y=None``). Callbacks see the usual skorch hooks;
    ``on_batch_end`` receives the step's ``loss``: the full training loss at the parameters
    on which the step computed its gradient. The default callbacks (timer, scoring, printed
    log) are dropped: they cost more than a small network's GD step, and the estimators
    record what they need themselves.
    """

    def __init__(self, *args, batch_size=-1, train_split=None, **kwargs):
        super().__init__(*args, batch_size=batch_size, train_split=train_split, **kwargs)

    def get_default_callbacks(self):
        return []

    def get_iterator(self, dataset, training=False):
        if isinstance(dataset, FullBatch):
            return (dataset,)
        return super().get_iterator(dataset, training=training)

    def train_step_single(self, batch, **fit_params):
        if not isinstance(batch, FullBatch):
            return super().train_step_single(batch, **fit_params)
        self._set_training(True)
        loss = full_batch_loss(self.infer, self._training_loss, batch)
        return {"loss": loss, "y_pred": None}

    def _training_loss(self, y_pred, y_true):
        return self.get_loss(y_pred, y_true, training=True)
