"""Models as folders people share: ``model.safetensors`` (the weights), ``config.json``
(architecture, classes, palette, normalisation, input size, provenance, test metrics) and
``README.md`` (a model card with YAML front matter), the layout model hubs use.

Reading a folder never unpickles anything: the weights are safetensors and the rest is
JSON, checked key by key against ``CONFIG_SCHEMA`` before any of it is used. ``hf-hub:
OWNER/NAME`` ids are fetched with ``huggingface_hub`` (the ``hub`` extra) and only when
asked for.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

from ..files import atomic_path
from .kernel_storage import WEIGHT_STORAGE, restore_kernels, store_kernels

FOLDER_FORMAT = "segnet-pretrained"
FOLDER_VERSION = 2  # 2: convolution kernels may be stored in int8 or bf16 (a segnet reading only 1 refuses those)
INT8_SCALE_SUFFIX = ".int8_scale"  # beside each int8 kernel KEY: KEY.int8_scale, one fp32 scale per output channel
FILES = ("model.safetensors", "config.json", "README.md")
HUB_PREFIX = "hf-hub:"
MAX_CONFIG_BYTES = 4_000_000  # a config.json is a few kB; anything near this is not one
MAX_CLASSES = 4096
MAX_SIDE = 8192


def _classes_ok(value, config) -> bool:
    return (isinstance(value, list) and len(value) == config.get("num_classes")
            and all(isinstance(v, str) and 0 < len(v) <= 200 for v in value))


def _palette_ok(value, config) -> bool:
    return (isinstance(value, list) and len(value) == config.get("num_classes")
            and all(_colour_ok(c) for c in value))


def _colour_ok(value, config=None) -> bool:
    return (isinstance(value, list) and len(value) == 3
            and all(isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= 255 for v in value))


def _normalization_ok(value, config) -> bool:
    def three(numbers, positive):
        return (isinstance(numbers, list) and len(numbers) == 3 and all(
            isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and (v > 0 or not positive)
            for v in numbers))
    return isinstance(value, dict) and set(value) == {"mean", "std"} and three(value["mean"], False) \
        and three(value["std"], True)


def _input_size_ok(value, config) -> bool:
    return value is None or (isinstance(value, list) and len(value) == 2 and all(
        isinstance(v, int) and not isinstance(v, bool) and 17 <= v <= MAX_SIDE for v in value))


def _int_in(low: int, high: int):
    return lambda value, config: isinstance(value, int) and not isinstance(value, bool) and low <= value <= high


def _of_type(kind):
    return lambda value, config: isinstance(value, kind) and not isinstance(value, bool)


# key: (required, check, what it must be); every other key is refused
CONFIG_SCHEMA = {
    "format": (True, lambda v, c: v == FOLDER_FORMAT, f"the string {FOLDER_FORMAT!r}"),
    "version": (True, _int_in(1, FOLDER_VERSION), f"an integer from 1 to {FOLDER_VERSION}"),
    "architecture": (True, _of_type(str), "a registered model name (segnet models)"),
    "num_classes": (True, _int_in(1, MAX_CLASSES), f"an integer from 1 to {MAX_CLASSES}"),
    "options": (True, _of_type(dict), "an object of the architecture's options"),
    "dataset": (True, _of_type(str), "the dataset's name"),
    "class_names": (True, _classes_ok, "one name per class (num_classes strings)"),
    "palette": (True, _palette_ok, "one [r, g, b] colour (0-255) per class"),
    "ignore_index": (True, _int_in(0, 65535), "the label value of void pixels (0-65535)"),
    "ignore_color": (True, _colour_ok, "an [r, g, b] colour (0-255)"),
    "normalization": (True, _normalization_ok, "{'mean': 3 finite numbers, 'std': 3 positive finite numbers}"),
    "input_size": (True, _input_size_ok, f"null or [height, width], each 17 to {MAX_SIDE}"),
    "provenance": (False, _of_type(dict), "an object (recipe, training configuration, epoch)"),
    "test_metrics": (False, _of_type(dict), "an object (the test scores)"),
    "model_card": (False, _of_type(str), "the model card's text (Markdown)"),
    "stored_weights": (False, lambda v, c: v in WEIGHT_STORAGE, "'fp32', 'bf16' or 'int8' (convolution kernels)"),
}


def check_config(config, where: str | os.PathLike) -> dict:
    """``config`` if it follows ``CONFIG_SCHEMA``; ValueError naming the file and the key otherwise."""
    if not isinstance(config, dict):
        raise ValueError(f"{where}: not a JSON object; a segnet model folder's config.json is one")
    unknown = sorted(set(config) - set(CONFIG_SCHEMA))
    if unknown:
        raise ValueError(f"{where}: unknown key {unknown[0]!r} (known: {', '.join(CONFIG_SCHEMA)}); the file was not "
                         "written by segnet, or by a newer one")
    for key, (required, check, what) in CONFIG_SCHEMA.items():
        if key not in config:
            if required:
                raise ValueError(f"{where}: key {key!r} is missing; it must be {what}")
            continue
        if not check(config[key], config):
            shown = json.dumps(config[key])
            raise ValueError(f"{where}: key {key!r} is {shown[:80]}{'...' if len(shown) > 80 else ''}; it must be {what}")
    return config


def is_model_folder(path: str | os.PathLike) -> bool:
    """True for a folder holding a segnet ``config.json`` and ``model.safetensors``."""
    path = Path(path)
    return path.is_dir() and (path / "config.json").is_file() and (path / "model.safetensors").is_file()


def read_model_folder(folder: str | os.PathLike) -> dict:
    """A model folder as a checkpoint dict (the form ``engine.checkpoint`` reads), with no
    unpickling; ValueError naming the file and what is wrong."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    folder = Path(folder)
    for name in ("config.json", "model.safetensors"):
        if not (folder / name).is_file():
            raise FileNotFoundError(f"{folder / name}: missing; a segnet model folder holds {', '.join(FILES)} "
                                    "(written by save_pretrained or 'segnet slim --format safetensors')")
    path = folder / "config.json"
    if path.stat().st_size > MAX_CONFIG_BYTES:
        raise ValueError(f"{path}: {path.stat().st_size / 1e6:.0f} MB is far too large for a config.json")
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ValueError(f"{path}: not valid JSON ({error})") from None
    check_config(config, path)
    try:
        state = load_file(folder / "model.safetensors")
    except (SafetensorError, OSError, RuntimeError) as error:
        raise ValueError(f"{folder / 'model.safetensors'}: not a readable safetensors file ({error})") from None
    scales = {key[:-len(INT8_SCALE_SUFFIX)]: state.pop(key) for key in list(state) if key.endswith(INT8_SCALE_SUFFIX)}
    state, stored = restore_kernels(state, scales, folder / "model.safetensors")
    checkpoint = {
        "format": "segnet-checkpoint", "version": 1, "stored_weights": stored,
        "model": {"name": config["architecture"], "num_classes": config["num_classes"], "options": config["options"]},
        "dataset": {"name": config["dataset"], "class_names": config["class_names"], "palette": config["palette"],
                    "ignore_index": config["ignore_index"], "ignore_color": config["ignore_color"]},
        "normalization": config["normalization"], "state_dict": state, "input_size": config["input_size"],
    }
    for key in ("provenance", "test_metrics", "model_card"):
        if key in config:
            checkpoint[key] = config[key]
    return checkpoint


def folder_config(loaded, provenance: dict | None = None, test_metrics: dict | None = None,
                  model_card: str | None = None) -> dict:
    """The ``config.json`` of ``loaded`` (a ``LoadedModel``)."""
    meta = loaded.meta
    config = {
        "format": FOLDER_FORMAT, "version": FOLDER_VERSION, "architecture": loaded.name,
        "num_classes": meta.num_classes, "options": dict(loaded.options),
        "dataset": meta.name, "class_names": list(meta.class_names), "palette": [list(c) for c in meta.palette],
        "ignore_index": int(meta.ignore_index), "ignore_color": list(meta.ignore_color),
        "normalization": {k: [float(v) for v in loaded.normalization[k]] for k in ("mean", "std")},
        "input_size": list(loaded.input_size) if loaded.input_size else None,
    }
    for key, value in (("provenance", provenance), ("test_metrics", test_metrics), ("model_card", model_card)):
        if value is not None:
            config[key] = value
    return check_config(json.loads(json.dumps(config)), "the configuration to write")


def save_pretrained(loaded, folder: str | os.PathLike, provenance: dict | None = None,
                    test_metrics: dict | None = None, model_card: str | None = None, weights: str = "fp32") -> Path:
    """Write ``loaded`` (a ``LoadedModel``) to ``folder``: ``model.safetensors``,
    ``config.json`` and ``README.md`` (``hub_card``). ``provenance``, ``test_metrics`` and
    ``model_card`` (the card's body text) default to what ``loaded`` carries. ``weights``:
    ``fp32``, ``bf16`` (half the size) or ``int8`` (per output channel, as ``segnet slim
    --weights int8``: about a quarter of the size) for the convolution kernels. Each file is written atomically; other
    files in the folder are left alone."""
    from safetensors.torch import save_file

    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise ValueError(f"{folder}: is a file; save_pretrained writes a folder")
    folder.mkdir(parents=True, exist_ok=True)
    extras = loaded.extras
    config = folder_config(loaded, provenance if provenance is not None else extras.get("provenance"),
                           test_metrics if test_metrics is not None else extras.get("test_metrics"),
                           model_card if model_card is not None else extras.get("model_card"))
    state = {key: value.detach().cpu().contiguous() for key, value in loaded.model.state_dict().items()}
    state, scales = store_kernels(state, weights)
    state.update({key + INT8_SCALE_SUFFIX: scale.contiguous() for key, scale in scales.items()})
    if weights == "fp32":
        config["version"] = 1  # readable by every segnet that reads folders
    else:
        config.update(version=FOLDER_VERSION, stored_weights=weights)
    with atomic_path(folder / "model.safetensors") as tmp:
        save_file(state, str(tmp), metadata={"format": FOLDER_FORMAT, "architecture": config["architecture"]})
    with atomic_path(folder / "config.json") as tmp:
        Path(tmp).write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    with atomic_path(folder / "README.md") as tmp:
        Path(tmp).write_text(hub_card(config), encoding="utf-8")
    return folder


def hub_card(config) -> str:
    """The model card of a model folder's ``config`` (or of a ``LoadedModel``): YAML front
    matter (license, datasets, tags, pipeline_tag, a model-index with the test results),
    then the card's own text (``model_card``), or a summary with the test scores for a
    model without one. docs/models/NAME.md and the shipped folder's README.md are both this
    function's output for the same config.json (tested), so they cannot drift apart."""
    if not isinstance(config, dict):
        config = folder_config(config, **config.extras)
    name = config["architecture"]
    metrics = config.get("test_metrics") or {}
    rows = [(label, key, metrics.get(key)) for label, key in (
        ("global accuracy", "global_accuracy"), ("class average accuracy", "mean_accuracy"),
        ("mean IoU", "mean_iou"), ("boundary F1", "mean_bf_score")) if isinstance(metrics.get(key), (int, float))]
    yaml = ["---", "license: mit", "library_name: segnet", "pipeline_tag: image-segmentation",
            "tags:", "  - semantic-segmentation", "  - segnet", "  - pytorch", "  - safetensors",
            f"datasets:\n  - {config['dataset']}"]
    if rows:
        yaml += ["model-index:", f"  - name: {name}", "    results:", "      - task:",
                 "          type: image-segmentation", "        dataset:", f"          name: {config['dataset']}",
                 f"          type: {config['dataset']}", "          split: test", "        metrics:"]
        for label, key, value in rows:
            yaml += [f"          - name: {label}", f"            type: {key}", f"            value: {value * 100:.2f}"]
    yaml.append("---")
    body = config.get("model_card")
    if body:
        return "\n".join(yaml + [""]) + body.rstrip("\n") + "\n"
    size = config["input_size"]
    summary = [f"# Model card: `{name}` for {config['dataset']}", "",
               f"{config['num_classes']} classes ({', '.join(config['class_names'])}); runs at "
               f"{f'{size[0]}x{size[1]}' if size else 'the image size'}. Load it with "
               "`segnet.from_pretrained(FOLDER)` or `segnet predict --checkpoint FOLDER IMAGE`."]
    if rows:
        summary += ["", "| test | % |", "|---|---|"] + [f"| {label} | {value * 100:.2f} |" for label, _, value in rows]
    return "\n".join(yaml + [""] + summary) + "\n"


def download_from_hub(hub_id: str, revision: str | None = None) -> Path:
    """``hf-hub:OWNER/NAME`` -> the local folder ``huggingface_hub`` fetched it to."""
    repo = hub_id[len(HUB_PREFIX):] if hub_id.startswith(HUB_PREFIX) else hub_id
    if repo.count("/") != 1 or not all(repo.split("/")):
        raise ValueError(f"{hub_id}: a hub id is hf-hub:OWNER/NAME")
    try:
        from huggingface_hub import hf_hub_download
    except ImportError:
        raise ValueError(f"{hub_id}: loading from the Hugging Face Hub needs huggingface_hub: "
                         "pip install 'segnet[hub]'") from None
    paths = [Path(hf_hub_download(repo_id=repo, filename=name, revision=revision))
             for name in ("config.json", "model.safetensors")]
    return paths[0].parent
