"""The main job on the embedded default (``segnet demo``): train SegNet-Basic on generated
road scenes, evaluate it with every metric, and segment a few images, offline, in about a
minute on two CPU cores."""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path

# segnet_basic, paper-basic recipe, at reduced size and length: about a minute on 2 CPU cores;
# fp32 in the default layout, so that the numbers are the same on every CPU (README quotes them)
DEMO_OVERRIDES = {"dataset": "synthetic", "model": "segnet_basic", "epochs": 14, "batch_size": 8, "size": [48, 64],
                  "val_every": 2, "device": "cpu", "seed": 0, "amp": "off", "channels_last": False}


def run_demo(out: str | os.PathLike, on_step: Callable[[], None] = lambda: None) -> dict:
    """Train, evaluate and segment into ``out`` (``run/``, ``evaluation/``, ``predictions/``,
    and ``street/`` when CamVid is beside the checkout). ``on_step`` is called before each
    of the three steps. Returns the test metrics, the seconds taken and the street image's name."""
    from ..data import build_dataset
    from ..report import write_evaluation
    from ..engine.inference import load_model
    from ..engine.predict import write_prediction
    from ..engine.recipes import resolve_config
    from ..engine.train import train

    out = Path(out)
    if (out / "run").exists():
        shutil.rmtree(out / "run")  # the demo always starts from scratch
    start = time.perf_counter()
    on_step()
    train(resolve_config("paper-basic", DEMO_OVERRIDES), out / "run")
    on_step()
    trained = load_model(out / "run" / "best.pt")  # it records the size it was trained at
    test = build_dataset("synthetic", None, "test")
    result = trained.evaluate(test, bf_mode="exact", amp="off")
    write_evaluation(result, out / "evaluation", {"model": str(out / "run" / "best.pt"), "split": "test"})
    on_step()
    for index in range(4):
        image, _ = test.load(index)
        write_prediction(image, trained.segment(image, amp="off"), trained.meta, out / "predictions",
                         test.name_of(index))
    street = segment_camvid_street(out / "street")
    return {"metrics": result.metrics, "seconds": time.perf_counter() - start, "street": street}


def segment_camvid_street(out: Path) -> str | None:
    """Segment one real CamVid test image with the shipped model, when the data is beside the checkout."""
    from ..pretrained import DEFAULT_PRETRAINED
    from ..engine.inference import load_model
    from ..engine.predict import predict_files

    from ..data.datasets import shared_camvid

    root = shared_camvid()
    images = sorted((root / "test").glob("*.png")) if root else []
    if not images:
        return None
    shipped = load_model(DEFAULT_PRETRAINED)
    written, _ = predict_files(shipped, [str(images[len(images) // 2])], out, progress=False)
    return written[-1].name  # the overlay
