"""The verbs: evaluate, train, predict. The only place that joins models, data and metrics."""

from .checkpoint import load_checkpoint, save_checkpoint, slim_checkpoint
from .evaluate import Evaluation, evaluate
from .inference import LoadedModel, load_model

__all__ = ["Evaluation", "LoadedModel", "evaluate", "load_checkpoint", "load_model",
           "save_checkpoint", "slim_checkpoint"]
