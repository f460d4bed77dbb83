"""The SegNet model family. Imports nothing from the rest of the package."""

from .mc_dropout import mc_dropout_predict
from .pooling import (PoolRecord, max_pool_with_indices, max_unpool, max_unpool_index_free, min_input_size,
                      smallest_input, use_index_free_unpooling)
from .registry import MODELS, ModelInfo, count_parameters, create_model, list_models, model_info

__all__ = [
    "MODELS",
    "ModelInfo",
    "PoolRecord",
    "count_parameters",
    "create_model",
    "list_models",
    "max_pool_with_indices",
    "max_unpool",
    "max_unpool_index_free",
    "mc_dropout_predict",
    "min_input_size",
    "model_info",
    "smallest_input",
    "use_index_free_unpooling",
]
