"""Monte Carlo dropout inference for Bayesian SegNet."""

from __future__ import annotations

import torch
from torch import Tensor, nn

_DROPOUT_TYPES = (nn.Dropout, nn.Dropout2d)


def has_dropout(model: nn.Module) -> bool:
    """True when the model has at least one dropout layer with p > 0."""
    return any(isinstance(m, _DROPOUT_TYPES) and m.p > 0 for m in model.modules())


@torch.no_grad()
def mc_dropout_predict(model: nn.Module, images: Tensor, samples: int = 8) -> tuple[Tensor, Tensor]:
    """Run ``samples`` stochastic passes with dropout on and batch norm frozen.

    Returns:
        mean_probs: ``(N, K, H, W)`` mean of the softmax samples; its argmax is the prediction.
        uncertainty: ``(N, H, W)`` variance of the softmax samples (over the samples,
            population variance), averaged over classes, as Bayesian SegNet reports it.
    """
    if samples < 1:
        raise ValueError(f"samples must be at least 1, got {samples}")
    if not has_dropout(model):
        raise ValueError(
            f"{type(model).__name__} has no dropout layers, so every pass would be identical; "
            "use a Bayesian model (bayesian_segnet, bayesian_segnet_basic)"
        )
    was_training = model.training
    model.eval()  # batch norm uses its running statistics ...
    for module in model.modules():
        if isinstance(module, _DROPOUT_TYPES):
            module.train()  # ... while dropout keeps sampling
    try:
        # Welford's running mean and sum of squares: memory for two maps, not all samples.
        mean = m2 = None
        for count in range(1, samples + 1):
            probs = model(images).float().softmax(dim=1)
            if mean is None:
                mean, m2 = probs, torch.zeros_like(probs)
                continue
            delta = probs - mean
            mean = mean + delta / count
            m2 = m2 + delta * (probs - mean)
    finally:
        model.train(was_training)
    return mean, (m2 / samples).mean(dim=1)
