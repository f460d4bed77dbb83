"""segnet: SegNet (Badrinarayanan, Kendall, Cipolla, TPAMI 2017) in PyTorch."""

from .models import count_parameters, create_model, list_models, mc_dropout_predict, model_info
from .engine import LoadedModel, from_pretrained, hub_card, load_model, parse_tta, save_pretrained
from .pretrained import PRETRAINED, pretrained_path

__version__ = "0.1.0"

__all__ = ["PRETRAINED", "LoadedModel", "__version__", "count_parameters", "create_model", "from_pretrained",
           "hub_card", "list_models", "load_model", "mc_dropout_predict", "model_info", "parse_tta",
           "pretrained_path", "save_pretrained"]
