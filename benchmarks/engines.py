"""The inference engines against plain eager fp32, in one process, and what the default
costs in accuracy.

    python benchmarks/engines.py [--model segnet] [--repeats 5] [--accuracy --root CAMVID]
    python benchmarks/engines.py --emulate-avx2      # this CPU limited to AVX2 (see below)

Speed: ``--model`` at 360x480, batch 1, untrained weights (speed does not depend on them),
the ONNX engines' exports checked on images in the model's own normalisation, as
``LoadedModel`` does.
Every path is built first (its first call, compiling or exporting included, is reported
as its start-up), then the paths run in turn, ``--repeats`` rounds, and each figure is the
median over the rounds; ratios are to plain eager fp32 of the same run. Paths: plain eager
fp32 (BN unfolded, contiguous, ``no_grad``), plain bf16 + channels_last (unfolded), and the
engines ``auto`` (what every command runs), eager, compile, winograd, nnpack, onnxruntime and int8
(an engine this CPU cannot run, such as winograd without native bf16, is left out with a note).

Accuracy (``--accuracy``): each shipped model on CamVid test (233 images, whole frames),
plain fp32 against the default path and against int8 (calibrated on 4 training frames,
never on test frames); mIoU and G with their difference.

``--emulate-avx2`` restricts oneDNN and ATen to AVX2 (``ONEDNN_MAX_CPU_ISA=AVX2``,
``ATEN_CPU_CAPABILITY=avx2``) and hides the CPU's bf16 flags from segnet's rules
(``SEGNET_CPU_FLAGS=avx2``): an approximation of an AVX2-only CPU on the same cores, not a
measurement of one.
"""

from __future__ import annotations

import argparse
import copy
import os
import statistics
import sys
import time


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="segnet")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--engines", nargs="+", default=["auto", "eager", "compile", "winograd", "nnpack", "onnxruntime",
                                                         "int8"])
    parser.add_argument("--accuracy", action="store_true")
    parser.add_argument("--root", default="../shared/data/CamVid")
    parser.add_argument("--emulate-avx2", action="store_true")
    args = parser.parse_args()
    if args.emulate_avx2 and os.environ.get("ONEDNN_MAX_CPU_ISA") != "AVX2":
        os.environ.update(ONEDNN_MAX_CPU_ISA="AVX2", ATEN_CPU_CAPABILITY="avx2", SEGNET_CPU_FLAGS="avx2")
        os.execv(sys.executable, [sys.executable, *sys.argv])  # the ISA limit must be set before torch loads

    import torch

    from segnet.engine import load_model, precision
    from segnet.engine.engines import build_engine
    from segnet.engine.measure import device_name
    from segnet.export.onnx import ParityError

    loaded = load_model(model=args.model)
    model = loaded.model.eval()
    x = torch.rand(1, 3, 360, 480)
    paths, startup = {}, {}

    def plain(layout, amp):
        network = copy.deepcopy(model).to(memory_format=layout)  # the engines start from the same weights

        def run():
            with torch.no_grad(), precision.autocast(amp, "cpu"):
                return network(x.contiguous(memory_format=layout))
        return run

    paths["plain eager fp32"] = plain(torch.contiguous_format, "off")
    for engine in args.engines:
        try:
            network, runtime = build_engine(model, engine, "auto", "cpu", images=None,
                                           normalization=loaded.normalization)
        except ValueError as error:  # an engine this CPU cannot run loses its row, not the run
            print(f"{engine}: left out ({error})", file=sys.stderr)
            continue
        def run(network=network):  # the engine's network runs in its own precision
            with torch.inference_mode():
                return network(x)
        start = time.perf_counter()
        try:
            run()
        except ParityError as error:  # an export that fails its check loses its row, not the run
            print(f"{engine}: left out ({error})", file=sys.stderr)
            continue
        label = f"{engine} ({runtime['engine']}, {runtime['precision']})" if engine == "auto" else \
            f"{engine} ({runtime['precision']})"
        startup[label] = time.perf_counter() - start
        paths[label] = run
    paths["plain bf16 + channels_last"] = plain(torch.channels_last, "bf16")
    for run in paths.values():
        run()
    times = {name: [] for name in paths}
    for _ in range(args.repeats):
        for name, run in paths.items():
            start = time.perf_counter()
            run()
            times[name].append(time.perf_counter() - start)
    medians = {name: statistics.median(t) * 1000 for name, t in times.items()}
    base, bf16_cl = medians["plain eager fp32"], medians["plain bf16 + channels_last"]
    print(f"Device: {device_name(torch.device('cpu'))}; torch {torch.__version__}; {args.model} 360x480, batch 1, "
          f"median of {args.repeats} rounds in one process.\n")
    print("| path | ms | vs plain fp32 | vs plain bf16 + channels_last | first call (s) |\n|---|---|---|---|---|")
    for name, ms in medians.items():
        first = f"{startup[name]:.1f}" if name in startup else ""
        print(f"| {name} | {ms:.0f} | {base / ms:.2f}x | {bf16_cl / ms:.2f}x | {first} |")
    if args.accuracy:
        accuracy(args.root)


def accuracy(root: str) -> None:
    from segnet.data import build_dataset
    from segnet.engine import evaluate, load_model
    from segnet.pretrained import PRETRAINED

    import torch

    train, test = build_dataset("camvid", root, "train"), build_dataset("camvid", root, "test")
    print("\n| shipped model | plain fp32 G / mIoU | path | its G / mIoU | mIoU cost |\n|---|---|---|---|---|")
    for name in PRETRAINED:
        loaded = load_model(name)
        plain = evaluate(loaded.model, test, loaded.normalization, input_size=loaded.input_size, amp="off",
                         bf_mode=None, progress=False).metrics
        int8 = load_model(name).prepare("int8")
        picks = torch.linspace(0, len(train) - 1, 4).round().long().tolist()
        int8.predict_logits(torch.stack([train.load(i)[0] for i in picks]))  # calibrates on training frames
        for path in (loaded, int8):
            metrics = path.evaluate(test, bf_mode=None, progress=False).metrics
            ran = f"{metrics['runtime']['engine']}, {metrics['runtime']['precision']}"
            print(f"| {name} | {plain['global_accuracy'] * 100:.2f} / {plain['mean_iou'] * 100:.2f} | {ran} | "
                  f"{metrics['global_accuracy'] * 100:.2f} / {metrics['mean_iou'] * 100:.2f} | "
                  f"{(plain['mean_iou'] - metrics['mean_iou']) * 100:.2f} |")


if __name__ == "__main__":
    main()
