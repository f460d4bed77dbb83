"""Hostile and damaged checkpoints (issue 35, items 7, 8, 10, 14): each is a row; every row
must end in a clear error that names the file, never a bug report or a silent wrong result."""

import numpy as np
import pytest
import torch
from PIL import Image

from segnet.cli import main
from segnet.engine.checkpoint import save_checkpoint
from segnet.engine.inference import load_model


@pytest.fixture(scope="module")
def good(tmp_path_factory):
    folder = tmp_path_factory.mktemp("ckpt")
    loaded = load_model(model="segnet_basic")
    path = save_checkpoint(folder / "good.pt", loaded.model, "segnet_basic", loaded.meta, loaded.normalization,
                           input_size=[48, 64])
    Image.fromarray(np.full((48, 64, 3), 90, np.uint8)).save(folder / "street.png")
    return path


def _edit(change):
    def write(good, target):
        payload = torch.load(good, weights_only=True)
        change(payload)
        torch.save(payload, target)
    return write


def _first_running_var(payload):
    key = next(k for k in payload["state_dict"] if k.endswith("running_var"))
    payload["state_dict"][key] = -payload["state_dict"][key].abs() - 1


def _nan_weight(payload):
    key = next(k for k, v in payload["state_dict"].items() if v.is_floating_point())
    payload["state_dict"][key] = payload["state_dict"][key] * float("nan")


ROWS = [
    ("version as a string", _edit(lambda p: p.update(version="1")), "'version' entry is '1'"),
    ("negative input size", _edit(lambda p: p.update(input_size=[-5, 0])), "'input_size'"),
    ("huge input size", _edit(lambda p: p.update(input_size=[10**7, 10**7])), "'input_size'"),
    ("non-tensor weight", _edit(lambda p: p["state_dict"].update(bad="x")), "names and tensors only"),
    ("std of zero", _edit(lambda p: p["normalization"].update(std=[0.0, 1.0, 1.0])), "std must be 3 positive"),
    ("negative running_var", _edit(_first_running_var), "is negative"),
    ("NaN weights", _edit(_nan_weight), "NaN or infinite"),
    ("random bytes", lambda good, target: target.write_bytes(np.random.default_rng(0).bytes(5000)),
     "not a segnet checkpoint"),
]


@pytest.mark.parametrize("name, make, message", ROWS, ids=[row[0] for row in ROWS])
@pytest.mark.parametrize("command", ["predict", "slim", "export"])
def test_a_bad_checkpoint_is_a_clear_error_in_every_command(good, tmp_path, capsys, name, make, message, command):
    bad = tmp_path / "bad.pt"
    make(good, bad)
    argv = {"predict": ["predict", "--checkpoint", str(bad), str(good.parent / "street.png"), "--out",
                        str(tmp_path / "out")],
            "slim": ["slim", str(bad), "--out", str(tmp_path / "slim.pt")],
            "export": ["export", "--checkpoint", str(bad), "--out", str(tmp_path / "m.onnx")]}[command]
    status = main(argv)
    err = capsys.readouterr().err
    assert status == 2, err  # bad input: never 4 (a bug) and never 0 (a silent wrong result)
    assert message in err and str(bad) in err
    assert "weights_only=False" not in err
    assert not (tmp_path / "slim.pt").exists() and not (tmp_path / "m.onnx").exists()
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


@pytest.mark.parametrize("content", [b"just some text\n", b"", np.random.default_rng(1).bytes(3000)],
                         ids=["text", "empty", "random bytes"])
def test_encoder_weights_that_are_not_a_state_dict_are_a_clear_error(tmp_path, capsys, content):
    weights = tmp_path / "vgg16.pth"
    weights.write_bytes(content)
    status = main(["train", "--model", "segnet", "--dataset", "synthetic", "--epochs", "1",
                   "--encoder-weights", str(weights), "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert status == 2 and str(weights) in err and "not a readable weights file" in err, err


@pytest.mark.parametrize("free,said", [(0, "the disk is full"), (10**9, "the write failed (file write failed)")])
def test_a_full_disk_while_saving_keeps_the_last_good_checkpoint(tmp_path, monkeypatch, capsys, free, said):
    """torch reports a full disk as 'file write failed'; segnet says the disk is full (or, with
    space left, that the write failed), names the file and keeps what was there. (A stand-in
    for torch.save fails the way a full disk does.)"""
    import shutil as shutil_module
    from collections import namedtuple

    from segnet.cli import describe_error

    loaded = load_model(model="segnet_basic")
    path = save_checkpoint(tmp_path / "last.pt", loaded.model, "segnet_basic", loaded.meta, loaded.normalization)
    before = path.read_bytes()

    def full_disk_save(payload, target):
        open(target, "wb").write(b"partial")
        raise RuntimeError("file write failed\n[enforce fail at inline_container.cc:778] . PytorchStreamWriter "
                           "failed writing file data/3: unexpected pos 2048 vs 1024")

    monkeypatch.setattr(torch, "save", full_disk_save)
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil_module, "disk_usage", lambda _: usage(10**9, 10**9, free))
    with pytest.raises(OSError) as caught:
        save_checkpoint(path, loaded.model, "segnet_basic", loaded.meta, loaded.normalization)
    message, status = describe_error(caught.value)
    assert said in message and str(path) in message and status == 1
    assert path.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == ["last.pt"]
