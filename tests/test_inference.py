"""Inference and deployment: segment/predict, BN folding, ONNX export with onnxruntime parity."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from segnet.cli import main
from segnet.data import SYNTHETIC_META
from segnet.engine import save_checkpoint
from segnet.engine.inference import LoadedModel
from segnet.engine.predict import predict_files
from segnet.export import compare_outputs, export_onnx, fold_batchnorm
from segnet.models import MODELS, create_model
from segnet.report import palette_png

RAW = {"mean": (0.0, 0.0, 0.0), "std": (1 / 255, 1 / 255, 1 / 255)}


def _with_statistics(model):
    """Give every BN layer non-trivial running statistics, as training would."""
    model.train()
    with torch.no_grad():
        for _ in range(3):
            model(torch.rand(2, 3, 40, 56) * 4 - 1)
    return model.eval()


@pytest.mark.parametrize("name", list(MODELS))
def test_batchnorm_folding_keeps_outputs(name):
    model = _with_statistics(create_model(name, 7))
    folded, count = fold_batchnorm(model)
    assert count == sum(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules()) > 0
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in folded.modules())
    x = torch.rand(2, 3, 37, 53) * 4 - 1
    with torch.no_grad():
        reference, result = model(x), folded(x)
    # folding reorders float operations; rare near-tied pooling windows may then flip
    numbers = compare_outputs(reference.numpy(), result.numpy())
    assert numbers["label_agreement"] > 0.999 and numbers["values_off_fraction"] < 0.001


def test_segment_accepts_tensor_pil_and_path(tmp_path):
    model = create_model("segnet_basic", 6)
    loaded = LoadedModel(model, SYNTHETIC_META, RAW, None, "test", "segnet_basic")
    image = (torch.rand(3, 30, 41) * 255).to(torch.uint8)
    labels = loaded.segment(image)
    assert labels.shape == (30, 41) and labels.dtype == torch.int64 and model.training  # mode restored
    pil = Image.fromarray(image.permute(1, 2, 0).numpy())
    assert torch.equal(loaded.segment(pil), labels)
    pil.save(tmp_path / "x.png")
    assert torch.equal(loaded.segment(tmp_path / "x.png"), labels)
    resized = LoadedModel(model, SYNTHETIC_META, RAW, (20, 28), "test", "segnet_basic")
    assert resized.segment(image).shape == (30, 41)  # resized and back
    with pytest.raises(ValueError, match="uint8"):
        loaded.segment(image.float())


def test_palette_png_stores_class_ids():
    labels = np.array([[0, 1], [5, 255]], dtype=np.uint8)
    picture = palette_png(labels, SYNTHETIC_META)
    assert picture.mode == "P" and np.array_equal(np.array(picture), labels)
    assert picture.getpalette()[3:6] == list(SYNTHETIC_META.palette[1])


def test_predict_files_folders_globs_failures_and_uncertainty(tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    for i, size in enumerate([(30, 40), (30, 40), (25, 33)]):
        Image.fromarray((np.random.rand(*size, 3) * 255).astype(np.uint8)).save(folder / f"img{i}.png")
    (folder / "broken.png").write_bytes(b"not an image")
    model = create_model("bayesian_segnet_basic", 6)
    loaded = LoadedModel(model, SYNTHETIC_META, RAW, None, "test", "bayesian_segnet_basic", trained=False)
    written, failures = predict_files(loaded, [str(folder), str(tmp_path / "in" / "img0.*")], tmp_path / "out",
                                      mc_samples=3, progress=False)
    assert [f[0] for f in failures] == [str(folder / "broken.png")] and "cannot be read" in failures[0][1]
    names = sorted(p.name for p in written)
    # the same file twice (folder and glob) is kept twice, under unique names
    assert {"in__img0.png", "in__img0__2.png", "in__img0_overlay.png", "in__img0__2_overlay.png"} <= set(names)
    assert len(names) == len(set(names)) == 4 * 3 and all((tmp_path / "out" / n).is_file() for n in names)
    assert {"img1.png", "img1_overlay.png", "img1_uncertainty.png", "img2.png"} <= set(names)
    heat = np.array(Image.open(tmp_path / "out" / "img2_uncertainty.png"))
    assert heat.shape == (25, 33, 3) and heat.std() > 0
    with pytest.raises(ValueError, match="Bayesian"):
        plain = LoadedModel(create_model("segnet_basic", 6), SYNTHETIC_META, RAW, None, "test", "segnet_basic")
        predict_files(plain, [str(folder)], tmp_path / "o", mc_samples=2)


def test_cli_predict_exit_status(tmp_path, capsys):
    ckpt = save_checkpoint(tmp_path / "m.pt", create_model("segnet_basic", 6), "segnet_basic", SYNTHETIC_META, RAW)
    Image.fromarray(np.zeros((20, 30, 3), np.uint8)).save(tmp_path / "a.png")
    assert main(["predict", "--checkpoint", str(ckpt), str(tmp_path / "a.png"), "--out", str(tmp_path / "o")]) == 0
    assert main(["predict", "--checkpoint", str(ckpt), str(tmp_path / "a.png"), str(tmp_path / "missing.png"),
                 "--out", str(tmp_path / "o")]) == 1
    captured = capsys.readouterr()
    assert "missing.png" in captured.err and "1 image(s) segmented, 1 failed" in captured.out


@pytest.mark.slow
@pytest.mark.parametrize("name,index_free", [("segnet_basic", False), ("segnet_basic", True), ("segnet", False)])
def test_onnx_export_matches_pytorch(tmp_path, name, index_free):
    pytest.importorskip("onnxruntime")
    model = _with_statistics(create_model(name, 11))
    report = export_onnx(model, tmp_path / "m.onnx", sizes=[(360, 480), (45, 61)], index_free=index_free,
                         metadata={"class_names": ["a"]})
    assert (tmp_path / "m.onnx").is_file() and [c["shape"] for c in report["checks"]] == [[1, 3, 360, 480],
                                                                                          [2, 3, 45, 61]]
    for check in report["checks"]:
        assert check["label_agreement"] >= 0.995 and check["values_off_fraction"] <= 0.02
    import onnx

    proto = onnx.load(str(tmp_path / "m.onnx"))
    meta = {p.key: p.value for p in proto.metadata_props}
    assert meta["batchnorm_folded"] == "true" and meta["index_free"] == str(index_free).lower()
    floor = 9 if name == "segnet_basic" else 17  # 4 or 5 poolings, two pixels each at the deepest
    assert json.loads(meta["min_input_size"]) == [floor, floor]
    with pytest.raises(ValueError, match=f"below the smallest input this model accepts \\({floor}x{floor}"):
        export_onnx(model, tmp_path / "small.onnx", sizes=[(360, 480), (floor - 1, 40)])
    assert not (tmp_path / "small.onnx").exists()
    ops = {node.op_type for node in proto.graph.node}
    assert "BatchNormalization" not in ops
    if index_free:  # no pooling indices anywhere in the graph
        assert all(len(node.output) == 1 for node in proto.graph.node if node.op_type == "MaxPool")


def test_parity_check_catches_a_real_difference():
    from segnet.export.onnx import parity_ok

    reference = np.random.default_rng(0).normal(size=(1, 4, 20, 20)).astype(np.float32)
    shifted = np.roll(reference, 1, axis=-1)  # a one-pixel shift, as a crop bug would give
    assert parity_ok(compare_outputs(reference, reference))
    assert not parity_ok(compare_outputs(reference, shifted))


@pytest.mark.slow
def test_benchmark_reports_every_column(tmp_path):
    from segnet.benchmark import count_flops, markdown_table, run_benchmark, write_benchmark

    # a 3x3 convolution on 10x10: 2 * 9 * 3 * 4 * 100 FLOPs (and its bias is not counted)
    assert count_flops(torch.nn.Conv2d(3, 4, 3, padding=1), (10, 10)) == 2 * 9 * 3 * 4 * 100
    variants = ("eager", "folded", "nnpack")  # nnpack: an engine, as default, compile, onnxruntime and int8 are
    result = run_benchmark(["segnet_basic"], size=(33, 45), variants=variants, batch_sizes=(1, 2), repeats=1,
                           progress=False)
    row = result["rows"][0]
    assert row["params_m"] == pytest.approx(1.4167, abs=1e-3) and row["gflops"] > 0
    assert set(row["variants"]) == set(variants)
    for r in row["variants"].values():
        assert r["latency_ms"] > 0 and r["images_per_s"] > 0 and r["best_batch"] in (1, 2)
        assert 0 < r["fraction_of_matmul_peak"] and r["peak_memory_mb"] > 0
    assert result["matmul_peak_gflops_per_s"] > 0
    if Path("/proc/self/clear_refs").exists():  # Linux: the fresh-process inference memory is measured
        assert row["inference_memory_mb"] > 1.4167 * 4  # at least the fp32 weights
    md, js = write_benchmark(result, tmp_path / "bench.md")
    assert "| segnet_basic | 1.417 |" in md.read_text() and "folded" in markdown_table(result)
    assert json.loads(js.read_text())["rows"][0]["model"] == "segnet_basic"


def test_device_name_names_the_gpu_and_the_cpu(monkeypatch):
    # every table and bundle is labelled with this; a CUDA-only path is otherwise never run here
    from segnet.engine.measure import device_name

    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "NVIDIA Test GPU")
    assert device_name(torch.device("cuda:0")) == "NVIDIA Test GPU"
    cpu = device_name(torch.device("cpu"))
    assert cpu.endswith(f"{torch.get_num_threads()} threads") and "(" in cpu


def test_training_benchmark_times_whole_frames_and_crops(tmp_path, capsys):
    from segnet.engine.precision import resolve_amp

    assert main(["benchmark", "--training", "--models", "fcn_basic", "--size", "32x48", "--crop", "17x24",
                 "--out", str(tmp_path / "train")]) == 0
    table = capsys.readouterr().out
    assert "| fcn_basic | whole frames 32x48 |" in table and "| fcn_basic | crops 17x24 |" in table
    rows = json.loads((tmp_path / "train.json").read_text())["rows"]
    assert [row["input"] for row in rows] == ["whole frames", "crops"] and all(row["fp32"] > 0 for row in rows)
    native = resolve_amp("auto", torch.device("cpu")) == "bf16"
    assert all(("bf16" in row) == native for row in rows)  # bf16 only where the CPU runs it natively
    assert "Device: " in (tmp_path / "train.md").read_text()


@pytest.mark.slow
def test_int8_quantization_runs_and_stays_close(tmp_path):
    pytest.importorskip("onnxruntime")
    import onnx
    import onnxruntime

    from segnet.export import quantize_onnx

    model = _with_statistics(create_model("segnet_basic", 5))
    export_onnx(model, tmp_path / "fp32.onnx", sizes=[(45, 61)])
    calibration = (torch.rand(4, 3, 45, 61) * 4 - 1).numpy()
    quantize_onnx(tmp_path / "fp32.onnx", tmp_path / "int8.onnx", calibration)
    ops = {node.op_type for node in onnx.load(str(tmp_path / "int8.onnx")).graph.node}
    assert "QuantizeLinear" in ops and "DequantizeLinear" in ops
    x = calibration[:1]
    outputs = [onnxruntime.InferenceSession(str(tmp_path / name), providers=["CPUExecutionProvider"])
               .run(None, {"image": x})[0] for name in ("fp32.onnx", "int8.onnx")]
    assert outputs[1].shape == outputs[0].shape
    # 8-bit activations create ties in pooling windows that move unpooled values, so the
    # logits differ noticeably; the labels still mostly agree (chance would be about 1/5)
    agreement = (outputs[1].argmax(1) == outputs[0].argmax(1)).mean()
    assert agreement > 0.45
    with pytest.raises(ValueError, match="calibration"):
        quantize_onnx(tmp_path / "fp32.onnx", tmp_path / "bad.onnx", np.zeros((0, 3, 45, 61), np.float32))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fp32.onnx", "int8.onnx"]  # nothing half-written


@pytest.mark.slow
def test_table6_columns_and_ratios_to_segnet():
    from segnet.benchmark import PAPER_TABLE6, TABLE6_COLUMNS, run_table6, table6_markdown

    result = run_table6(("segnet", "deeplab_largefov"), size=(33, 45), repeats=1, progress=False)
    segnet_row, deeplab = result["table6"]
    for row in result["table6"]:
        for column in ("forward_ms", "backward_ms", "model_mb"):
            assert row[column] > 0
    assert all(segnet_row[f"{c}_ratio"] == 1.0 for c in TABLE6_COLUMNS if segnet_row.get(c) is not None)
    assert deeplab["model_mb_ratio"] == pytest.approx(20_507_723 / 29_449_355)  # fp32 weights, 4 bytes each
    assert deeplab["inference_memory_mb_paper_ratio"] == pytest.approx(1993 / 1052)
    assert deeplab["paper"] == PAPER_TABLE6["deeplab_largefov"]
    if segnet_row["train_memory_mb"] is not None:  # Linux: measured in a fresh process
        assert segnet_row["train_memory_mb"] > segnet_row["inference_memory_mb"] > 0
    table = table6_markdown(result)
    assert "| deeplab_largefov | 20.5 |" in table and "paper 1.89x" in table


def test_benchmark_tables_read_well_on_a_gpu():
    # the H200's numbers, as its JSON holds them: single-digit milliseconds keep their
    # decimals, and the CPU-only fresh-process memory table is left out where nothing filled it
    from segnet.report.tables import markdown_table, table6_markdown

    table6 = {"device": "NVIDIA H200", "size": [360, 480], "torch": "2.11", "table6": [
        {"model": "segnet", "params_m": 29.4, "forward_ms": 4.712, "forward_ms_ratio": 1.0, "backward_ms": 312.4,
         "backward_ms_ratio": 1.0}]}
    assert "| segnet | 29.4 | 4.71 (1.00x) | 312 (1.00x) | - | - | - |" in table6_markdown(table6)
    variant = {"latency_ms": 2.07, "images_per_s": 1051.6, "best_batch": 64, "peak_memory_mb": 366.1,
               "achieved_gflops_per_s": 224431.0, "fraction_of_matmul_peak": 0.28}
    gpu = {"device": "NVIDIA H200", "size": [360, 480], "torch": "2.11", "matmul_peak_gflops_per_s": 788836.0,
           "matmul_dtype": "bf16", "rows": [{"model": "segnet", "params_m": 29.449, "gflops": 213.4, "model_mb": 117.8,
                                             "inference_memory_mb": None, "variants": {"bf16": variant}}]}
    assert "fresh process |" not in markdown_table(gpu)
    assert "| segnet | 29.449 | 213.4 | 117.8 | bf16 | 2.1 | 1051.60 (64) | 366 | 224431 | 28% |" in markdown_table(gpu)
    gpu["rows"][0]["inference_memory_mb"] = 362.0
    assert "| segnet | 362 |" in markdown_table(gpu)


@pytest.mark.slow
def test_load_model_is_one_way_in_for_paths_shipped_names_and_untrained_models(tmp_path):
    from segnet.engine import load_model
    from segnet.pretrained import pretrained_path

    by_name, by_path = load_model("camvid_segnet_basic"), load_model(pretrained_path("camvid_segnet_basic"))
    assert by_name.source == by_path.source and by_name.name == "segnet_basic" and by_name.trained
    assert by_name.input_size == (360, 480) and len(by_name.meta.class_names) == 11
    image = (torch.rand(3, 45, 61) * 255).to(torch.uint8)
    labels = by_name.segment(image, amp="off")
    assert labels.shape == (45, 61)
    assert torch.equal(labels, by_path.segment(image, amp="off"))
    assert torch.equal(by_name.predict_logits(image[None], amp="off").argmax(1)[0], labels)
    folded = by_name.folded()
    assert folded.model is not by_name.model and folded.meta is by_name.meta
    assert (folded.segment(image, amp="off") == labels).float().mean() > 0.99
    untrained = load_model(model="segnet_basic", num_classes=6, meta=SYNTHETIC_META)
    assert not untrained.trained and untrained.meta is SYNTHETIC_META and untrained.input_size is None
    assert untrained.segment(image).shape == (45, 61)
    with pytest.raises(ValueError, match="--device cuda:7"):
        load_model("camvid_segnet_basic", device="cuda:7")
    with pytest.raises(ValueError, match="model=NAME"):
        load_model()


def _street(path):
    Image.fromarray(np.full((40, 50, 3), 100, np.uint8)).save(path)
    return path


@pytest.mark.parametrize("case", ["out is the input folder", "a user's file of the same name",
                                  "a segnet output changed by the user"])
def test_predict_never_writes_over_an_input_or_a_file_it_did_not_write(tmp_path, capsys, case):
    from segnet.cli import main

    photos = tmp_path / "photos"
    photos.mkdir()
    photo = _street(photos / "x.png")
    out = tmp_path / "o"
    out.mkdir()
    if case == "out is the input folder":
        out = photos
    elif case == "a user's file of the same name":
        (out / "x.png").write_bytes(b"my own notes")
    else:
        assert main(["predict", "--model", "segnet_basic", str(photo), "--out", str(out)]) == 0
        (out / "x_overlay.png").write_bytes(b"edited by hand")
    before = {p: p.read_bytes() for p in (photos.iterdir()) } | {p: p.read_bytes() for p in out.iterdir()}
    assert main(["predict", "--model", "segnet_basic", str(photo), "--out", str(out)]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert {p: p.read_bytes() for p in photos.iterdir()} | {p: p.read_bytes() for p in out.iterdir()} == before
    assert main(["predict", "--model", "segnet_basic", str(photo), "--out", str(out), "--overwrite"]) == 0


def test_a_rerun_rewrites_segnets_own_outputs(tmp_path):
    from segnet.cli import main

    photo = _street(tmp_path / "x.png")
    for _ in range(2):
        assert main(["predict", "--model", "segnet_basic", str(photo), "--out", str(tmp_path / "o")]) == 0
    assert sorted(p.name for p in (tmp_path / "o").iterdir()) == [".segnet-outputs.json", "x.png", "x_overlay.png"]


def test_predict_removes_what_a_killed_predict_left_half_written(tmp_path):
    import subprocess
    import sys as system

    from segnet.cli import main

    dead = subprocess.run([system.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True).stdout.strip()  # a process id that no longer runs
    out = tmp_path / "o"
    out.mkdir()
    left = out / f".drive_overlay.mp4.tmp{dead}"
    left.write_bytes(b"half a video")
    assert main(["predict", "--model", "segnet_basic", str(_street(tmp_path / "x.png")), "--out", str(out)]) == 0
    assert not left.exists()


@pytest.mark.parametrize("variant", ["eager", "folded", "channels_last"])
def test_a_benchmark_variant_on_another_device_runs_a_copy_and_leaves_the_model_on_the_cpu(variant):
    # on a GPU each variant's peak memory must hold its own weights only, not the unfolded
    # model too; the meta device stands in for the GPU (shapes only, no computation)
    from segnet.benchmark import _runner

    model = create_model("segnet_basic", 11).eval()
    run = _runner(model, variant, torch.device("meta"))
    assert run(torch.empty(1, 3, 32, 48, device="meta")).shape == (1, 11, 32, 48)
    assert {p.device.type for p in model.parameters()} == {"cpu"}


@pytest.mark.slow
def test_a_model_onnx_cannot_export_loses_that_variant_only(capsys):
    from segnet.benchmark import benchmark_model

    pytest.importorskip("onnxruntime")
    # FCN-8s at a size its 32x poolings do not divide: torch's ONNX exporter cannot build its
    # transposed convolutions (at 360x480 too)
    row = benchmark_model("fcn8s", (72, 104), "cpu", variants=("eager", "onnxruntime"), batch_sizes=(1,), repeats=1)
    assert "eager" in row["variants"] and "onnxruntime" not in row["variants"]
    assert "Error" in row["unavailable"]["onnxruntime"]
    assert "fcn8s onnxruntime: not measured" in capsys.readouterr().err


# the other commands with a fixed set of output files: (argv after the command, the file a user has there)
WRITERS = [
    pytest.param(["evaluate", "--model", "segnet_basic", "--dataset", "synthetic", "--bf", "none", "--out", "{out}"],
                 "metrics.json", id="evaluate"),
    pytest.param(["slim", "{ckpt}", "--out", "{out}/slim.pt"], "slim.pt", id="slim"),
    pytest.param(["slim", "{ckpt}", "--format", "safetensors", "--out", "{out}"], "README.md", id="slim-folder"),
    pytest.param(["data", "pack", "--dataset", "synthetic", "--splits", "val", "--out", "{out}/s.pack"], "s.pack",
                 id="data-pack"),
]


@pytest.mark.parametrize("argv, users_file", WRITERS)
def test_every_writer_refuses_a_users_file_and_rewrites_its_own(tmp_path, capsys, argv, users_file, few_scenes):
    from segnet.cli import main

    ckpt = save_checkpoint(tmp_path / "best.pt", create_model("segnet_basic", 6), "segnet_basic", SYNTHETIC_META, RAW)
    out = tmp_path / "o"
    out.mkdir()
    (out / users_file).write_bytes(b"my own file")
    args = [part.format(out=out, ckpt=ckpt) for part in argv]
    assert main(args) == 2
    assert "--overwrite" in capsys.readouterr().err and (out / users_file).read_bytes() == b"my own file"
    assert sorted(p.name for p in out.iterdir()) == [users_file]  # refused before any work
    assert main(args + ["--overwrite"]) == 0 and (out / users_file).read_bytes() != b"my own file"
    assert main(args) == 0  # a rerun rewrites what segnet wrote


def test_export_never_writes_over_its_own_checkpoint(tmp_path, capsys):
    from segnet.cli import main

    ckpt = save_checkpoint(tmp_path / "best.pt", create_model("segnet_basic", 6), "segnet_basic", SYNTHETIC_META, RAW)
    before = ckpt.read_bytes()
    assert main(["export", "--checkpoint", str(ckpt), "--out", str(ckpt)]) == 2
    assert "one of the inputs" in capsys.readouterr().err and ckpt.read_bytes() == before


def test_a_16_bit_image_reads_the_same_from_a_file_an_upload_and_a_pil_image(tmp_path):
    from segnet.data import load_image
    from segnet.serve.app import decode_upload

    path = tmp_path / "deep.png"
    Image.fromarray(np.linspace(0, 65535, 40 * 50).reshape(40, 50).astype(np.uint16)).save(path)
    assert Image.open(path).mode.startswith("I")  # really 16-bit on disk
    from_file = load_image(path)
    assert from_file.max() == 255 and from_file.float().std() > 50  # rescaled, not clipped to white
    assert torch.equal(decode_upload(path.read_bytes(), minimum=8), from_file)
    loaded = LoadedModel(create_model("segnet_basic", 6), SYNTHETIC_META, RAW, None, "test", "segnet_basic")
    assert torch.equal(loaded.segment(Image.open(path)), loaded.segment(path))


def test_a_full_disk_while_predicting_says_so_names_the_file_and_leaves_nothing_half_written(tmp_path, capsys,
                                                                                             monkeypatch):
    import errno

    from segnet.cli import main

    photo = _street(tmp_path / "x.png")
    out = tmp_path / "o"

    def full_disk_save(self, target, *args, **kwargs):
        open(target, "wb").write(b"partial")
        raise OSError(errno.ENOSPC, "No space left on device", str(target))

    monkeypatch.setattr(Image.Image, "save", full_disk_save)
    assert main(["predict", "--model", "segnet_basic", str(photo), "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert f"{out / 'x.png'}: the disk is full; nothing was replaced" in err and ".tmp" not in err
    assert [p.name for p in out.iterdir()] == []  # no temporary file left
