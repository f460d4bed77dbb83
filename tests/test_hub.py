"""Model folders (safetensors + config.json + model card), hub ids and torch.hub."""

import json
import sys
import types
from pathlib import Path

import pytest
import torch

import segnet
from segnet.cli import main
from segnet.engine.hub import hub_card

ROOT = Path(__file__).resolve().parents[1]


def _same_weights(a, b) -> bool:
    sa, sb = a.model.state_dict(), b.model.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


@pytest.fixture(scope="module")
def street():
    from segnet.data import build_dataset

    return build_dataset("synthetic", None, "val", count=1, size=(96, 128)).load(0)[0]


def test_the_shipped_model_is_a_safetensors_folder_that_loads(street):
    folder = segnet.pretrained_path("camvid_segnet_basic")
    assert sorted(p.name for p in folder.iterdir()) == ["README.md", "config.json", "model.safetensors"]
    shipped = segnet.load_model("camvid_segnet_basic")
    assert shipped.input_size == (360, 480) and shipped.extras["test_metrics"]["mean_iou"] > 0.49
    assert shipped.segment(street).shape == street.shape[1:]


def test_round_trip_is_bit_identical_with_identical_labels(tmp_path, street):
    shipped = segnet.load_model("camvid_segnet_basic")
    folder = shipped.save_pretrained(tmp_path / "copy")
    again = segnet.from_pretrained(folder)
    assert _same_weights(shipped, again)
    assert torch.equal(shipped.segment(street, amp="off"), again.segment(street, amp="off"))
    assert (again.meta.class_names, again.normalization, again.input_size) == \
        (shipped.meta.class_names, shipped.normalization, shipped.input_size)


def test_a_freshly_trained_tiny_model_round_trips(tmp_path, street):
    from segnet.engine.checkpoint import save_checkpoint

    loaded = segnet.load_model(model="segnet_basic")
    with torch.no_grad():
        for p in loaded.model.parameters():
            p.add_(torch.randn_like(p) * 0.01)  # weights that are not the initial ones
    ckpt = save_checkpoint(tmp_path / "best.pt", loaded.model, "segnet_basic", loaded.meta, loaded.normalization,
                           input_size=[64, 96], recipe="paper-basic", epoch=3)
    folder = segnet.load_model(ckpt).save_pretrained(tmp_path / "tiny")
    again = segnet.from_pretrained(folder)
    assert _same_weights(loaded, again) and again.input_size == (64, 96)
    assert again.extras["provenance"] == {"recipe": "paper-basic", "epoch": 3}
    assert torch.equal(segnet.load_model(ckpt).segment(street, amp="off"), again.segment(street, amp="off"))
    card = (folder / "README.md").read_text()
    assert card.startswith("---\nlicense: mit") and "pipeline_tag: image-segmentation" in card


@pytest.mark.parametrize("name", sorted(segnet.PRETRAINED))
def test_the_docs_card_and_the_shipped_card_come_from_the_same_config(name):
    folder = segnet.pretrained_path(name)
    config = json.loads((folder / "config.json").read_text())
    card = hub_card(config)
    assert (folder / "README.md").read_text() == card
    assert (ROOT / "docs" / "models" / f"{name}.md").read_text() == card, \
        f"docs/models/{name}.md drifted from the shipped card: rewrite it with hub_card (see the card)"
    test_miou = f"value: {config['test_metrics']['mean_iou'] * 100:.2f}"
    assert "model-index:" in card and test_miou in card and f"# Model card: `{name}`" in card


def _hostile_folder(tmp_path, change) -> Path:
    folder = segnet.pretrained_path("camvid_segnet_basic")
    target = tmp_path / "hostile"
    target.mkdir()
    (target / "model.safetensors").symlink_to(folder / "model.safetensors")
    config = json.loads((folder / "config.json").read_text())
    change(config)
    (target / "config.json").write_text(json.dumps(config))
    return target


@pytest.mark.parametrize("change, key", [
    (lambda c: c.update(num_classes="11"), "num_classes"),
    (lambda c: c.update(num_classes=10**9), "num_classes"),
    (lambda c: c.update(input_size=[-5, 0]), "input_size"),
    (lambda c: c.update(input_size=[10**9, 480]), "input_size"),
    (lambda c: c.update(class_names=["Sky"] * 3), "class_names"),
    (lambda c: c["normalization"].update(std=[0, 1, 1]), "normalization"),
    (lambda c: c.update(palette=[[300, 0, 0]] * 11), "palette"),
    (lambda c: c.update(__reduce__="os.system"), "__reduce__"),
    (lambda c: c.pop("architecture"), "architecture"),
    (lambda c: c.update(format="pickle"), "format"),
])
def test_a_hostile_config_gets_a_clear_error_naming_the_key(tmp_path, change, key):
    folder = _hostile_folder(tmp_path, change)
    with pytest.raises(ValueError, match=f"config.json: .*{key!r}"):
        segnet.from_pretrained(folder)


def test_an_unknown_architecture_is_refused_by_name(tmp_path):
    folder = _hostile_folder(tmp_path, lambda c: c.update(architecture="resnet_evil"))
    with pytest.raises(ValueError, match="cannot build"):
        segnet.from_pretrained(folder)


def test_loading_a_folder_never_unpickles(tmp_path, monkeypatch):
    import pickle

    def refuse(*args, **kwargs):
        raise AssertionError("unpickling while loading a model folder")

    monkeypatch.setattr(pickle, "load", refuse)
    monkeypatch.setattr(pickle, "loads", refuse)
    monkeypatch.setattr(torch, "load", refuse)
    assert segnet.from_pretrained(segnet.pretrained_path("camvid_segnet_basic")).trained


def test_a_folder_without_weights_says_what_is_missing(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(FileNotFoundError, match="model.safetensors: missing"):
        segnet.from_pretrained(tmp_path)


def test_hub_ids_pass_the_right_arguments_to_hf_hub_download(tmp_path, monkeypatch):
    """No network here: a stand-in for huggingface_hub.hf_hub_download serves a local folder."""
    served = segnet.pretrained_path("camvid_segnet_basic")
    calls = []

    def hf_hub_download(repo_id, filename, revision=None):
        calls.append((repo_id, filename, revision))
        return str(served / filename)

    monkeypatch.setitem(sys.modules, "huggingface_hub", types.SimpleNamespace(hf_hub_download=hf_hub_download))
    loaded = segnet.from_pretrained("hf-hub:someone/camvid-segnet")
    assert calls == [("someone/camvid-segnet", "config.json", None), ("someone/camvid-segnet", "model.safetensors", None)]
    assert _same_weights(loaded, segnet.load_model("camvid_segnet_basic"))


def test_a_hub_id_without_the_extra_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "huggingface_hub", None)  # import fails
    with pytest.raises(ValueError, match=r"pip install 'segnet\[hub\]'"):
        segnet.from_pretrained("hf-hub:someone/model")


def test_cli_slim_to_safetensors_then_predict_with_the_folder(tmp_path, capsys):
    import numpy as np
    from PIL import Image

    assert main(["slim", "camvid_segnet_basic", "--format", "safetensors", "--out", str(tmp_path / "m")]) == 0
    Image.fromarray(np.full((60, 80, 3), 120, np.uint8)).save(tmp_path / "a.png")
    assert main(["predict", "--checkpoint", str(tmp_path / "m"), str(tmp_path / "a.png"),
                 "--out", str(tmp_path / "o")]) == 0
    assert (tmp_path / "o" / "a.png").is_file()
    assert main(["slim", "camvid_segnet_basic", "--format", "safetensors", "--weights", "int8",
                 "--out", str(tmp_path / "n")]) == 0
    assert "in int8" in capsys.readouterr().out
    config = json.loads((tmp_path / "n" / "config.json").read_text())
    assert config["version"] == 2 and config["stored_weights"] == "int8"
    assert json.loads((tmp_path / "m" / "config.json").read_text())["version"] == 1  # fp32 folders stay readable
    assert (tmp_path / "n" / "model.safetensors").stat().st_size < 0.3 * (tmp_path / "m" / "model.safetensors").stat().st_size


def test_an_int8_folder_loads_to_within_half_a_step_and_refuses_edits(tmp_path):
    from safetensors.torch import load_file, save_file

    shipped = segnet.load_model("camvid_segnet_basic")
    folder = shipped.save_pretrained(tmp_path / "n", weights="int8")
    again = segnet.from_pretrained(folder)
    stored = load_file(folder / "model.safetensors")
    for key, value in shipped.model.state_dict().items():
        restored = again.model.state_dict()[key]
        if value.is_floating_point() and value.dim() == 4:  # a kernel: int8 on disk, within half a scale step
            assert stored[key].dtype == torch.int8
            step = stored[key + ".int8_scale"]
            assert ((restored - value).abs() <= step / 2 + 1e-7).all()
        else:
            assert torch.equal(restored, value)
    stored.pop(next(key for key in stored if key.endswith(".int8_scale")))  # an edited file
    save_file(stored, str(folder / "model.safetensors"))
    with pytest.raises(ValueError, match="int8 without a scale"):
        segnet.from_pretrained(folder)


def test_torch_hub_loads_each_shipped_model_from_a_checkout():
    loaded = torch.hub.load(str(ROOT), "segnet", source="local", pretrained="camvid_segnet_basic")
    assert _same_weights(loaded, segnet.load_model("camvid_segnet_basic"))
    assert torch.hub.load(str(ROOT), "camvid_segnet_basic", source="local").name == "segnet_basic"
    assert torch.hub.load(str(ROOT), "camvid_segnet", source="local").name == "segnet"
    untrained = torch.hub.load(str(ROOT), "segnet", source="local", architecture="segnet_basic", num_classes=5)
    assert not untrained.trained and untrained.model(torch.rand(1, 3, 32, 32)).shape[1] == 5


def test_round_trip_gives_identical_labels_on_a_camvid_test_image(tmp_path, camvid_root):
    from segnet.data import load_image

    image = load_image(sorted((camvid_root / "test").glob("*.png"))[0])
    shipped = segnet.load_model("camvid_segnet_basic")
    again = segnet.from_pretrained(shipped.save_pretrained(tmp_path / "copy"))
    assert torch.equal(shipped.segment(image), again.segment(image))  # the default engine, as users run it
