"""The verbs: evaluate, train, predict. The only place that joins models, data and metrics."""

from .checkpoint import load_checkpoint, save_checkpoint, slim_checkpoint
from .evaluate import Evaluation, evaluate
from .hub import hub_card
from .inference import LoadedModel, from_pretrained, load_model, save_pretrained
from .tta import TestTimeAugmentation, parse_tta

__all__ = ["Evaluation", "LoadedModel", "evaluate", "from_pretrained", "hub_card", "load_checkpoint", "load_model",
           "parse_tta", "save_checkpoint", "save_pretrained", "slim_checkpoint", "TestTimeAugmentation"]
