"""One loaded model with everything needed to run it: the one way in for evaluate, predict,
export, serve, video and the benchmarks.

``load_model`` takes a checkpoint path, a shipped model's name, or (``model=NAME``) a
registered architecture with untrained weights, and returns a ``LoadedModel``: the network
with its classes and palette, input normalisation, the input size it was trained at, and
where it came from. Its methods run it the way the package does everywhere.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn

from ..data import DatasetMeta, load_image
from .checkpoint import _model_from_checkpoint, load_checkpoint
from .evaluate import predict_logits
from .precision import autocast, check_device, resolve_amp


@dataclass
class LoadedModel:
    """A network and its metadata. ``input_size``: the ``(H, W)`` it runs at (images are
    resized to it and the scores back), or None for the image's own size. ``trained``:
    False for an architecture with initial weights (``meta`` is then a stand-in)."""

    model: nn.Module
    meta: DatasetMeta
    normalization: dict
    input_size: tuple[int, int] | None
    source: str
    name: str
    trained: bool = True

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def to(self, device: str | torch.device) -> LoadedModel:
        """Move to ``device`` (checked first: a missing GPU is named as such)."""
        self.model.to(check_device(device))
        return self

    def folded(self) -> LoadedModel:
        """A copy with batch norm folded into the convolutions (for inference and export)."""
        from ..export.fold import fold_batchnorm

        return dataclasses.replace(self, model=fold_batchnorm(self.model)[0])

    def check_classes(self, meta: DatasetMeta, dataset: str) -> None:
        """ValueError when a trained model's classes are not ``dataset``'s (scores would be meaningless)."""
        if self.trained and list(self.meta.class_names) != list(meta.class_names):
            raise ValueError(f"{self.source} was trained on classes {list(self.meta.class_names)}, but {dataset} "
                             f"has {list(meta.class_names)}; evaluate on the dataset it was trained for")

    def metadata(self) -> dict:
        """What a deployed copy needs to run and label like this one (stored in the ONNX file)."""
        return {"source": self.source, "class_names": list(self.meta.class_names),
                "palette": [list(c) for c in self.meta.palette], "mean": list(self.normalization["mean"]),
                "std": list(self.normalization["std"]),
                "input_size": list(self.input_size) if self.input_size else None}

    def evaluate(self, dataset, **options):
        """Score on ``dataset`` (``engine.evaluate.evaluate`` with this model's normalisation and
        input size; ``options``: its keyword arguments, e.g. ``bf_mode="exact"``)."""
        from .evaluate import evaluate

        return evaluate(self.model, dataset, self.normalization, input_size=self.input_size, **options)

    def export_onnx(self, path: str | os.PathLike, **options) -> dict:
        """Export to ONNX with this model's classes, palette, normalisation and input size in
        the file's metadata (``export.onnx.export_onnx``; ``options``: e.g. ``index_free``)."""
        from ..export import export_onnx

        return export_onnx(self.model, path, metadata=self.metadata(), normalization=self.normalization, **options)

    def predict_logits(self, images: torch.Tensor, amp: str = "auto") -> torch.Tensor:
        """uint8 ``(N, 3, H, W)`` -> fp32 logits ``(N, K, H, W)`` at the images' size."""
        self.model.eval()
        with torch.inference_mode():
            return predict_logits(self.model, images.to(self.device), self.normalization, self.input_size,
                                  resolve_amp(amp, self.device))

    def segment(self, image, amp: str = "auto") -> torch.Tensor:
        """One image (uint8 tensor ``(3, H, W)``, PIL image or path) -> ``(H, W)`` class ids on the CPU.

        ``amp``: auto (bf16 on CUDA and on CPUs with native bf16), bf16 or off."""
        if isinstance(image, (str, os.PathLike)):
            image = load_image(image)
        elif isinstance(image, Image.Image):
            image = torch.from_numpy(np.array(image.convert("RGB"))).permute(2, 0, 1)
        if image.dtype != torch.uint8 or image.dim() != 3 or image.shape[0] != 3:
            raise ValueError(f"expected a (3, H, W) uint8 image, got {tuple(image.shape)} {image.dtype}")
        was_training = self.model.training
        try:
            return self.predict_logits(image[None], amp).argmax(1)[0].cpu()
        finally:
            self.model.train(was_training)

    def segment_batch(self, images: list[torch.Tensor], mc_samples: int = 0,
                      amp: str = "auto") -> list[tuple[torch.Tensor, torch.Tensor | None]]:
        """``[(labels, variance or None)]`` for equally sized uint8 ``(3, H, W)`` images.
        ``mc_samples`` > 0 (Bayesian models): the labels are the argmax of the mean softmax
        over that many dropout samples and the variance is their per-pixel variance."""
        from ..models import mc_dropout_predict
        from .evaluate import normalize_and_resize

        batch = torch.stack(images).to(self.device)
        if not mc_samples:
            return [(labels, None) for labels in self.predict_logits(batch, amp).argmax(1)]
        self.model.eval()
        with torch.inference_mode():
            x, size = normalize_and_resize(batch, self.normalization, self.input_size)
            with autocast(resolve_amp(amp, self.device), self.device):
                mean, variance = mc_dropout_predict(self.model, x, mc_samples)
            mean, variance = mean.float(), variance.float()
            if size is not None:
                mean = torch.nn.functional.interpolate(mean, size=size, mode="bilinear")
                variance = torch.nn.functional.interpolate(variance[:, None], size=size, mode="bilinear")[:, 0]
        return list(zip(mean.argmax(1), variance))


def load_model(source: str | os.PathLike | None = None, *, model: str | None = None, num_classes: int = 11,
               meta: DatasetMeta | None = None, device: str | torch.device = "cpu") -> LoadedModel:
    """A checkpoint path or a shipped model's name (``source``), or, with ``model=NAME`` and no
    source, that architecture with initial weights for ``num_classes`` classes (``meta``:
    the classes to report; CamVid's when not given)."""
    from ..models import create_model, model_info
    from ..pretrained import PRETRAINED, pretrained_path

    device = check_device(device)  # before loading: a bad device is not a bad checkpoint
    if source is not None:
        path = pretrained_path(str(source)) if str(source) in PRETRAINED and not Path(source).exists() else source
        payload = load_checkpoint(path, device)
        network, checkpoint_meta, normalization = _model_from_checkpoint(payload, device, source=str(path))
        size = payload.get("input_size")
        return LoadedModel(network, checkpoint_meta, normalization, tuple(size) if size else None, str(path),
                           payload["model"]["name"])
    if model is None:
        raise ValueError("give a checkpoint, a shipped model's name, or model=NAME for an untrained model")
    if meta is None:
        from ..data.datasets import CAMVID_META

        meta = DatasetMeta.from_dict(CAMVID_META.to_dict())
    network = create_model(model, num_classes).to(device).eval()
    return LoadedModel(network, meta, dict(model_info(model).normalization), None, f"{model} (untrained, He init)",
                       model, trained=False)
