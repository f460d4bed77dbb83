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
from dataclasses import dataclass, field
from pathlib import Path

import torch
from PIL import Image
from torch import nn

from ..data import DatasetMeta, load_image
from ..data.io import rgb_tensor
from .checkpoint import _model_from_checkpoint, load_checkpoint
from .evaluate import predict_logits
from .precision import autocast, check_device, resolve_amp
from .tta import TestTimeAugmentation


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
    options: dict = field(default_factory=dict)  # the architecture's options (create_model keywords)
    extras: dict = field(default_factory=dict)  # provenance, test_metrics, model_card: what a card shows
    engine: str = "auto"
    tta: TestTimeAugmentation | None = None  # test-time augmentation for every prediction (engine.tta)
    # what inference runs (built by ``prepare``, on first use if not before) and its record
    network: nn.Module | None = field(default=None, repr=False, compare=False)
    runtime: dict | None = field(default=None, compare=False)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def to(self, device: str | torch.device) -> LoadedModel:
        """Move to ``device`` (checked first: a missing GPU is named as such)."""
        self.model.to(check_device(device))
        self.network = self.runtime = None
        return self

    def prepare(self, engine: str | None = None, amp: str = "auto", images: int | None = None) -> LoadedModel:
        """Build the network inference runs (``engine``: auto, eager, compile, winograd, nnpack,
        onnxruntime or int8; default: this model's ``engine``) for ``images`` images (None: open-ended work,
        which is what lets ``auto`` choose to compile). ``runtime`` then names the engine and
        precision. Returns self."""
        from .engines import build_engine

        self.engine = engine or self.engine
        self.network, self.runtime = build_engine(self.model, self.engine, amp, self.device, images,
                                                   normalization=self.normalization)
        self.runtime["requested"] = {"engine": self.engine, "amp": amp}
        return self

    def ready(self, amp: str = "auto", images: int | None = None) -> nn.Module:
        """The prepared network, prepared now (for ``images`` images, None: open-ended) if it
        is not yet, or if ``amp`` asks for another precision than the one prepared. It takes
        fp32 images and runs in its own precision (``runtime["precision"]``): call it without
        autocast."""
        if self.network is None or self.runtime["requested"]["amp"] != amp:
            self.prepare(amp=amp, images=images)
        return self.network

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

        network = self.ready(options.pop("amp", "auto"), len(dataset))
        options.setdefault("tta", self.tta)
        result = evaluate(network, dataset, self.normalization, input_size=self.input_size, amp="off", **options)
        result.metrics["runtime"].update(engine=self.runtime["engine"], precision=self.runtime["precision"])
        return result

    def save_pretrained(self, folder: str | os.PathLike, **card) -> Path:
        """Write this model as a folder people share: ``model.safetensors``, ``config.json``
        and a ``README.md`` model card (``engine.hub.save_pretrained``; ``card``: its
        ``provenance``, ``test_metrics`` or ``model_card`` text, default: what this model carries)."""
        from .hub import save_pretrained

        return save_pretrained(self, folder, **card)

    def export_onnx(self, path: str | os.PathLike, **options) -> dict:
        """Export to ONNX with this model's classes, palette, normalisation and input size in
        the file's metadata (``export.onnx.export_onnx``; ``options``: e.g. ``index_free``)."""
        from ..export import export_onnx

        return export_onnx(self.model, path, metadata=self.metadata(), normalization=self.normalization, **options)

    def predict_logits(self, images: torch.Tensor, amp: str = "auto") -> torch.Tensor:
        """uint8 ``(N, 3, H, W)`` -> fp32 logits ``(N, K, H, W)`` at the images' size, by the
        prepared engine (``prepare``; the default, auto, on first use), averaged over the
        views of ``tta`` when it is set (log probabilities then)."""
        network = self.ready(amp, len(images))
        with torch.inference_mode():
            return predict_logits(network, images.to(self.device), self.normalization, self.input_size, tta=self.tta)

    def segment(self, image, amp: str = "auto") -> torch.Tensor:
        """One image (uint8 tensor ``(3, H, W)``, PIL image or path) -> ``(H, W)`` class ids on the CPU.

        ``amp``: auto (bf16 on CUDA and on CPUs with native bf16), bf16 or off."""
        if isinstance(image, (str, os.PathLike)):
            image = load_image(image)
        elif isinstance(image, Image.Image):
            image = rgb_tensor(image)
        if image.dtype != torch.uint8 or image.dim() != 3 or image.shape[0] != 3:
            raise ValueError(f"expected a (3, H, W) uint8 image, got {tuple(image.shape)} {image.dtype}")
        return self.predict_logits(image[None], amp).argmax(1)[0].cpu()

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
        if self.tta is not None:
            raise ValueError("test-time augmentation and --mc-samples do not combine; leave one of them out")
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


def _card_extras(payload: dict) -> dict:
    """What a model card shows, from a checkpoint (a model folder carries it as is)."""
    if "provenance" in payload:
        extras = {"provenance": payload["provenance"]}
    else:
        extras = {"provenance": {key: payload[key] for key in ("recipe", "epoch", "config", "metrics", "bn_recomputed")
                                 if key in payload}}
    for key in ("test_metrics", "model_card"):
        if isinstance(payload.get(key), (dict, str)):
            extras[key] = payload[key]
    return extras


def load_model(source: str | os.PathLike | None = None, *, model: str | None = None, num_classes: int = 11,
               meta: DatasetMeta | None = None, device: str | torch.device = "cpu") -> LoadedModel:
    """A checkpoint file, a model folder (``save_pretrained``), an ``hf-hub:OWNER/NAME`` id
    (with the ``hub`` extra) or a shipped model's name (``source``), or, with ``model=NAME``
    and no source, that architecture with initial weights for ``num_classes`` classes (``meta``:
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
                           payload["model"]["name"], options=dict(payload["model"].get("options") or {}),
                           extras=_card_extras(payload))
    if model is None:
        raise ValueError("give a checkpoint, a shipped model's name, or model=NAME for an untrained model")
    if meta is None:
        from ..data.datasets import CAMVID_META

        meta = DatasetMeta.from_dict(CAMVID_META.to_dict())
    network = create_model(model, num_classes).to(device).eval()
    return LoadedModel(network, meta, dict(model_info(model).normalization), None, f"{model} (untrained, He init)",
                       model, trained=False)


def from_pretrained(source: str | os.PathLike, device: str | torch.device = "cpu") -> LoadedModel:
    """A model folder, an ``hf-hub:OWNER/NAME`` id or a shipped model's name, loaded
    (``load_model`` under the name model hubs use). Nothing is downloaded unless ``source``
    is a hub id."""
    return load_model(source, device=device)


def save_pretrained(loaded: LoadedModel, folder: str | os.PathLike, **card) -> Path:
    """``loaded.save_pretrained(folder, **card)``."""
    return loaded.save_pretrained(folder, **card)
