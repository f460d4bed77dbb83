"""segnet: SegNet (Badrinarayanan, Kendall, Cipolla, TPAMI 2017) in PyTorch."""

from .models import count_parameters, create_model, list_models, mc_dropout_predict, model_info
from .pretrained import PRETRAINED, pretrained_path

__version__ = "0.1.0"

__all__ = ["PRETRAINED", "__version__", "count_parameters", "create_model", "list_models", "mc_dropout_predict",
           "model_info", "pretrained_path"]
