"""Every mistake a user can make gets one clear line and a distinct exit status, with no
traceback, and nothing is written, overwritten or left behind.

One table of bad inputs across the commands. Each case runs the real CLI in-process on a
prepared folder ("world": a checkpoint, images, broken files, a finished run) and checks:
the exit status; that the message names the file or flag at fault and what to do; that
no traceback is printed; that the world is unchanged and no output was started.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from segnet.cli import EXIT_BAD_INPUT, EXIT_FAILED, EXIT_NOT_FOUND, describe_error, main
from segnet.data import SYNTHETIC_META
from segnet.engine import save_checkpoint
from segnet.models import create_model
from conftest import FEW_SCENES

RAW = {"mean": (0.0, 0.0, 0.0), "std": (1 / 255, 1 / 255, 1 / 255)}
BAD, MISSING, FAILED = EXIT_BAD_INPUT, EXIT_NOT_FOUND, EXIT_FAILED
TINY_TRAIN = ["--size", "32x48", "--batch-size", "8", "--epochs", "1", "--device", "cpu"]


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    """Inputs, good and bad, that the cases point at; none of them may change."""
    world = tmp_path_factory.mktemp("world")
    model = create_model("segnet_basic", SYNTHETIC_META.num_classes)
    good = save_checkpoint(world / "good.pt", model, "segnet_basic", SYNTHETIC_META, RAW)
    payload = torch.load(good, weights_only=False)
    poisoned = {**payload, "state_dict": dict(payload["state_dict"])}
    poisoned["state_dict"]["encoder.stages.1.0.weight"] = poisoned["state_dict"]["encoder.stages.1.0.weight"].clone()
    poisoned["state_dict"]["encoder.stages.1.0.weight"][0, 0, 0, 0] = float("nan")
    torch.save(poisoned, world / "nan.pt")
    torch.save({**payload, "model": {**payload["model"], "name": "segnet"}}, world / "other_architecture.pt")
    torch.save({k: v for k, v in payload.items() if k != "normalization"}, world / "no_normalization.pt")
    (world / "notes.pt").write_text("not a checkpoint\n")
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (40, 60, 3), np.uint8)).save(world / "street.png")
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(world / "tiny.png")
    (world / "words.png").write_text("this is text, not a PNG\n")
    (world / "truncated.png").write_bytes((world / "street.png").read_bytes()[:200])
    (world / "afile").write_text("a user's file that must survive\n")
    (world / "broken.json").write_text("{not json\n")
    (world / "notes.json").write_text('{"my": "notes"}\n')
    (world / "empty").mkdir()
    (world / "unstarted").mkdir()
    (world / "unstarted" / "config.json").write_text("{}\n")
    with pytest.MonkeyPatch.context() as patch:  # a module's fixture: few_scenes is per test
        patch.setattr("segnet.data.synthetic.DEFAULT_SIZES", FEW_SCENES)
        assert main(["train", "--out", str(world / "run"), *TINY_TRAIN]) == 0
    return world


def _snapshot(folder: Path) -> dict:
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(folder.rglob("*"))}


# (name, arguments, exit status, what the message must contain). {W}: the world folder;
# {O}: a fresh path for outputs, which a failing command must not create.
CASES = [
    # the command line itself
    ("no command", [], BAD, []),
    ("unknown command", ["fly"], BAD, ["invalid choice", "fly"]),
    ("bad size format", ["forward", "--size", "big"], BAD, ["--size", "HEIGHTxWIDTH"]),
    ("unknown model", ["forward", "--model", "segnet_huge"], BAD, ["segnet_huge", "segnet_basic"]),
    ("input below the minimum", ["forward", "--size", "4x4"], BAD, ["at least 9x9", "4x4"]),
    ("FCN-8s below its own minimum", ["forward", "--model", "fcn8s", "--size", "20x20"], BAD,
     ["at least 32x32", "20x20"]),
    # training
    ("unknown option", ["train", "--out", "{O}", "--set", "nonsense=1"], BAD, ["unknown training option", "nonsense"]),
    ("option without value", ["train", "--out", "{O}", "--set", "lr"], BAD, ["key=value"]),
    ("bad option value", ["train", "--out", "{O}", "--set", "optimizer=rmsprop"], BAD, ["optimizer", "rmsprop"]),
    ("unknown recipe", ["train", "--out", "{O}", "--recipe", "fastest"], BAD, ["fastest", "paper-basic"]),
    ("unknown dataset", ["train", "--out", "{O}", "--dataset", "cityscapes"], BAD, ["cityscapes"]),
    ("missing dataset root", ["train", "--out", "{O}", "--dataset", "camvid", "--root", "{W}/nowhere"], MISSING,
     ["nowhere"]),
    ("unknown device", ["train", "--out", "{O}", "--device", "banana", *TINY_TRAIN[:6]], BAD,
     ["--device", "banana", "cpu"]),
    ("no such GPU", ["train", "--out", "{O}", *TINY_TRAIN[:6], "--device", "cuda:7"], BAD, ["--device cuda:7"]),
    ("out is a file", ["train", "--out", "{W}/afile", *TINY_TRAIN], BAD, ["{W}/afile", "is a file", "--out"]),
    ("a file on the way to out", ["train", "--out", "{W}/afile/run", *TINY_TRAIN], BAD, ["afile is a file"]),
    ("resume without a run folder", ["train", "--out", "{O}", "--resume"], MISSING,
     ["no such run folder", "without --resume"]),
    ("resume a run with no checkpoint yet", ["train", "--out", "{W}/unstarted", "--resume"], MISSING,
     ["no checkpoint yet", "without --resume"]),
    ("resume with a changed flag", ["train", "--out", "{W}/run", "--resume", "--set", "hflip=true"], BAD,
     ["--hflip (False -> True)", "--init-from"]),
    ("a new run over a finished one", ["train", "--out", "{W}/run", *TINY_TRAIN], BAD, ["already holds a run",
                                                                                         "--resume"]),
    ("init from a missing file", ["train", "--out", "{O}", "--init-from", "{W}/gone.pt", *TINY_TRAIN], MISSING,
     ["gone.pt"]),
    ("init from another architecture", ["train", "--out", "{O}", "--model", "segnet", "--init-from", "{W}/good.pt",
                                        *TINY_TRAIN], BAD, ["good.pt", "segnet_basic"]),
    # evaluation and checkpoints
    ("checkpoint not found", ["evaluate", "--checkpoint", "{W}/gone.pt", "--out", "{O}"], MISSING, ["gone.pt"]),
    ("not a checkpoint", ["evaluate", "--checkpoint", "{W}/notes.pt", "--out", "{O}"], BAD, ["notes.pt"]),
    ("non-finite weights", ["evaluate", "--checkpoint", "{W}/nan.pt", "--out", "{O}"], BAD,
     ["nan.pt", "encoder.stages.1.0.weight", "NaN or infinite"]),
    ("checkpoint of another architecture", ["evaluate", "--checkpoint", "{W}/other_architecture.pt", "--out", "{O}"],
     BAD, ["other_architecture.pt", "segnet"]),
    ("checkpoint without normalization", ["evaluate", "--checkpoint", "{W}/no_normalization.pt", "--out", "{O}"],
     BAD, ["no_normalization.pt", "normalization"]),
    ("evaluate on a missing GPU", ["evaluate", "--checkpoint", "{W}/good.pt", "--out", "{O}", "--device", "cuda:7"],
     BAD, ["--device cuda:7"]),
    ("evaluate on an unknown device", ["evaluate", "--checkpoint", "{W}/good.pt", "--out", "{O}", "--device", "tpu"],
     BAD, ["--device", "tpu"]),
    ("evaluate out is a file", ["evaluate", "--checkpoint", "{W}/good.pt", "--out", "{W}/afile"], BAD,
     ["afile", "is a file"]),
    ("evaluate on a missing dataset", ["evaluate", "--checkpoint", "{W}/good.pt", "--out", "{O}", "--dataset",
                                       "camvid", "--root", "{W}/nowhere"], MISSING, ["nowhere"]),
    ("evaluate with a file as the dataset root", ["evaluate", "--checkpoint", "{W}/good.pt", "--out", "{O}",
                                                  "--dataset", "camvid", "--root", "{W}/afile"], BAD,
     ["afile", "is a file", "--root"]),
    # prediction: per-image failures are named and skipped, the rest is kept
    ("predict a missing image", ["predict", "--checkpoint", "{W}/good.pt", "{W}/gone.png", "--out", "{O}"], FAILED,
     ["gone.png"]),
    ("predict a text file", ["predict", "--checkpoint", "{W}/good.pt", "{W}/words.png", "--out", "{O}"], FAILED,
     ["words.png"]),
    ("predict a truncated image", ["predict", "--checkpoint", "{W}/good.pt", "{W}/truncated.png", "--out", "{O}"],
     FAILED, ["truncated.png"]),
    ("predict an image below the minimum", ["predict", "--checkpoint", "{W}/good.pt", "{W}/tiny.png", "--out", "{O}"],
     FAILED, ["tiny.png", "9x9"]),
    ("predict an empty folder", ["predict", "--checkpoint", "{W}/good.pt", "{W}/empty", "--out", "{O}"], BAD,
     ["empty"]),
    ("predict out is a file", ["predict", "--checkpoint", "{W}/good.pt", "{W}/street.png", "--out", "{W}/afile"],
     BAD, ["afile", "is a file"]),
    ("predict on a missing GPU", ["predict", "--checkpoint", "{W}/good.pt", "{W}/street.png", "--out", "{O}",
                                  "--device", "cuda:7"], BAD, ["--device cuda:7"]),
    ("predict with non-finite weights", ["predict", "--checkpoint", "{W}/nan.pt", "{W}/street.png", "--out", "{O}"],
     BAD, ["nan.pt", "NaN or infinite"]),
    ("predict with a bad batch size", ["predict", "--checkpoint", "{W}/good.pt", "{W}/street.png", "--out", "{O}",
                                       "--batch-size", "0"], BAD, ["--batch-size"]),
    # export
    ("export to a folder", ["export", "--checkpoint", "{W}/good.pt", "--out", "{W}/empty"], BAD,
     ["empty", "is a folder", "model.onnx"]),
    ("export check size below the minimum", ["export", "--checkpoint", "{W}/good.pt", "--out", "{O}.onnx",
                                             "--check-sizes", "8x8"], BAD, ["8x8", "9x9", "--check-sizes"]),
    ("export a missing checkpoint", ["export", "--checkpoint", "{W}/gone.pt", "--out", "{O}.onnx"], MISSING,
     ["gone.pt"]),
    ("export below a file", ["export", "--checkpoint", "{W}/good.pt", "--out", "{W}/afile/m.onnx"], BAD,
     ["afile is a file"]),
    # data
    ("check a missing dataset", ["data", "check", "--dataset", "camvid", "--root", "{W}/nowhere"], MISSING,
     ["nowhere"]),
    ("pack into a folder", ["data", "pack", "--out", "{W}/empty"], BAD, ["empty", "is a folder"]),
    ("class weights of a missing dataset", ["data", "weights", "--dataset", "camvid", "--root", "{W}/nowhere"],
     MISSING, ["nowhere"]),
    ("class weights cache of broken JSON", ["data", "weights", "--cache", "{W}/broken.json"], BAD,
     ["broken.json", "not JSON", "--cache"]),
    ("class weights cache that is a user's file", ["data", "weights", "--cache", "{W}/notes.json"], BAD,
     ["notes.json", "not a class-weight cache"]),
    ("class weights cache below a file", ["data", "weights", "--cache", "{W}/afile/w.json"], BAD,
     ["--cache", "afile is a file"]),
    # benchmark, reproduce, demo
    ("benchmark an unknown model", ["benchmark", "--models", "segnet_huge"], BAD, ["segnet_huge"]),
    ("benchmark on a missing GPU", ["benchmark", "--device", "cuda:7"], BAD, ["--device cuda:7"]),
    ("benchmark out is a folder", ["benchmark", "--out", "{W}/empty"], BAD, ["empty", "is a folder"]),
    ("reproduce into a file", ["reproduce", "table1", "--root", "{W}/nowhere", "--out", "{W}/afile"], BAD,
     ["afile", "is a file"]),
    ("demo into a file", ["demo", "--out", "{W}/afile"], BAD, ["afile", "is a file"]),
]


@pytest.mark.parametrize("name,arguments,status,needles", CASES, ids=[case[0] for case in CASES])
def test_bad_input_gets_one_clear_line_and_changes_nothing(world, tmp_path, capsys, name, arguments, status,
                                                           needles):
    out = tmp_path / "out"
    fill = lambda text: text.replace("{W}", str(world)).replace("{O}", str(out))  # noqa: E731
    before = _snapshot(world)
    try:
        code = main([fill(a) for a in arguments])
    except SystemExit as exit_info:  # argparse's own errors
        code = exit_info.code
    captured = capsys.readouterr()
    assert code == status, f"{name}: exit {code}, expected {status}; stderr: {captured.err!r}"
    for needle in needles:
        assert fill(needle) in captured.err, f"{name}: {fill(needle)!r} not in {captured.err!r}"
    assert "Traceback" not in captured.err + captured.out
    assert _snapshot(world) == before, f"{name} changed the inputs"
    if status != FAILED:  # refused before any work: no output started
        assert not any(p.exists() for p in (out, Path(f"{out}.onnx"))), f"{name} left {out}"


def test_argparse_errors_exit_with_the_bad_input_status():
    for arguments in (["fly"], ["forward", "--size", "big"]):
        with pytest.raises(SystemExit) as exit_info:
            main(arguments)
        assert exit_info.value.code == BAD


def test_a_bug_is_reported_as_one_and_debug_shows_the_traceback(monkeypatch, capsys):
    import segnet.cli as cli

    def broken(args):
        return {}["missing key"]  # an internal error, not the user's

    monkeypatch.setattr(cli, "cmd_models", broken)
    assert main(["models"]) == 4
    err = capsys.readouterr().err
    assert "KeyError" in err and "bug in segnet" in err and "--debug" in err and "Traceback" not in err
    with pytest.raises(KeyError):
        main(["--debug", "models"])


@pytest.mark.parametrize("error,status,needle", [
    (FileNotFoundError(2, "No such file or directory", "/data/x.png"), MISSING, "/data/x.png: not found"),
    (IsADirectoryError(21, "Is a directory", "/out"), BAD, "/out: is a folder"),
    (NotADirectoryError(20, "Not a directory", "/a/b"), BAD, "/a/b: a file is in the way"),
    (FileExistsError(17, "File exists", "/out"), BAD, "/out: a file is in the way"),
    (PermissionError(13, "Permission denied", "/root/x"), BAD, "/root/x: permission denied"),
    (OSError(28, "No space left on device", "/out/x"), BAD, "/out/x: No space left on device"),
    (ValueError("--lr must be positive"), BAD, "--lr must be positive"),
])
def test_operating_system_errors_name_the_path_and_a_remedy(error, status, needle):
    message, code = describe_error(error)
    assert code == status and needle in message and "\n" not in message


def test_an_unwritable_out_is_refused_before_any_work(tmp_path, capsys):
    probe = Path("/sys/segnet-probe")
    try:
        probe.mkdir()
    except OSError:
        pass
    else:  # pragma: no cover - a machine where /sys is writable
        probe.rmdir()
        pytest.skip("/sys is writable here, so it cannot stand for an unwritable place")
    assert main(["train", "--out", "/sys/segnet-run", *TINY_TRAIN]) == BAD
    err = capsys.readouterr().err
    assert "/sys/segnet-run" in err and "cannot write" in err and "Traceback" not in err


def test_stale_temporary_files_of_a_killed_process_are_cleaned_on_the_next_start(tmp_path, few_scenes):
    from segnet.files import remove_stale_temporaries

    run = tmp_path / "run"
    run.mkdir()
    dead = 2 ** 22 + 12345  # above the default pid_max: no such process
    (run / f".last.pt.tmp{dead}").write_bytes(b"half a checkpoint")
    alive = run / f".best.pt.tmp{os.getppid()}"  # a live process may still be writing it
    alive.write_bytes(b"in progress")
    assert remove_stale_temporaries(run) == [run / f".last.pt.tmp{dead}"]
    assert alive.exists()
    alive.unlink()
    (run / f".metrics.csv.tmp{dead}").write_text("epoch\n")
    assert main(["train", "--out", str(run), *TINY_TRAIN]) == 0  # training cleans up its folder first
    assert not [p.name for p in run.iterdir() if p.name.startswith(".")]


@pytest.mark.parametrize("module, extra", [("fastapi", "serve"), ("onnxruntime", "export"), ("onnx", "export")])
def test_a_missing_optional_dependency_names_the_extra_to_install(module, extra):
    from segnet.cli import EXIT_BAD_INPUT, describe_error

    error = ModuleNotFoundError(f"No module named '{module}'", name=module)
    message, status = describe_error(error)
    assert status == EXIT_BAD_INPUT and f"pip install 'segnet[{extra}]'" in message


def test_serve_without_the_serve_extra_is_not_called_a_bug(monkeypatch, capsys):
    import sys

    from segnet.cli import main

    monkeypatch.setitem(sys.modules, "fastapi", None)  # as if not installed
    assert main(["serve", "--model", "segnet_basic", "--port", "8765"]) == 2
    assert "pip install 'segnet[serve]'" in capsys.readouterr().err


@pytest.mark.parametrize("argv, words", [
    (["predict", "x.png", "--mc-samples", "-3"], "must be 0 or more"),
    (["evaluate", "--model", "segnet_basic", "--out", "o", "--samples", "-1"], "must be 0 or more"),
    (["serve", "--port", "0"], "a port is 1 to 65535"),
    (["serve", "--port", "70000"], "a port is 1 to 65535"),
    (["serve", "--max-upload-mb", "-1"], "must be a positive number"),
    (["train", "--lr", "nan", "--out", "o"], "must be a positive number"),
    (["forward", "--size", "0x5"], "positive sides"),
    (["benchmark", "--size", "1x1"], "at least 32x32"),
    (["train", "--size", "8x8", "--out", "o"], "at least 32x32"),
    (["evaluate", "--model", "segnet_basic", "--out", "o", "--tta", "flip,sideways"], "neither 'flip' nor a scale"),
])
def test_options_are_checked_before_any_work_in_plain_words(argv, words, capsys, tmp_path, monkeypatch):
    from segnet.cli import main

    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2 and words in capsys.readouterr().err
    assert not any(tmp_path.iterdir())  # nothing written


@pytest.mark.parametrize("yaml_text, words", [
    ("classes: [a, b, c]\ncolors: [[0, 0, 0], [1, 1, 1]]\n", "3 classes, 2 colours"),
    ("classes: [a, b]\ncolors: [[0, 0, 0], [1, 1, 300]]\n", "integers 0-255"),
    ("classes: [a, b]\ncolors: [[0, 0, 0], [1, 1]]\n", "one [R, G, B]"),
    ("classes: [a, b]\ncolors: 7\n", "one [R, G, B]"),
    ("classes: [a, b]\nignore_color: [0, 0]\n", "'ignore_color'"),
    ("classes: [a, b]\nignore_index: -1\n", "'ignore_index'"),
])
def test_a_bad_palette_in_classes_yaml_is_named_with_its_file(tmp_path, capsys, yaml_text, words):
    from segnet.cli import main

    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    (tmp_path / "classes.yaml").write_text(yaml_text)
    status = main(["data", "weights", "--dataset", "folder", "--root", str(tmp_path)])
    err = capsys.readouterr().err
    assert status == 2 and "classes.yaml" in err and words in err, err
