"""The verbs: evaluate, train, predict. The only place that joins models, data and metrics."""

from .checkpoint import load_checkpoint, model_from_checkpoint, save_checkpoint, slim_checkpoint
from .evaluate import Evaluation, evaluate

__all__ = ["Evaluation", "evaluate", "load_checkpoint", "model_from_checkpoint", "save_checkpoint", "slim_checkpoint"]
