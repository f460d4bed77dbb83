"""Test-time augmentation (``--tta``): what it parses, what it averages, and where it is recorded."""

from __future__ import annotations

import json

import pytest
import torch
from PIL import Image
from torch import nn

from segnet.cli import main
from segnet.data import SYNTHETIC_META, SyntheticRoadScenes
from segnet.engine import evaluate, save_checkpoint
from segnet.engine.inference import LoadedModel
from segnet.engine.tta import TestTimeAugmentation, augmented_logits, parse_tta
from segnet.models import create_model

RAW = {"mean": (0.0, 0.0, 0.0), "std": (1 / 255, 1 / 255, 1 / 255)}


@pytest.mark.parametrize("text, expected", [
    (None, None), ("off", None), ("", None),
    ("flip", TestTimeAugmentation((1.0,), True)),
    ("0.75,1,1.25", TestTimeAugmentation((0.75, 1.0, 1.25), False)),
    ("FLIP, 0.5, 1", TestTimeAugmentation((0.5, 1.0), True)),
])
def test_parse_tta_reads_flip_and_scales(text, expected):
    tta = parse_tta(text)
    assert tta == expected
    if tta is not None:
        assert parse_tta(tta.describe()) == tta  # what is recorded reads back as the same views


@pytest.mark.parametrize("text, message", [
    ("flip,3x", "neither 'flip' nor a scale"), ("mirror", "neither"), ("0.1", "outside 0.25 to 4"),
    ("nan", "outside"), ("inf", "outside"), ("1,1", "given twice"), ("flip,,1", "neither"),
])
def test_parse_tta_names_what_is_wrong(text, message):
    with pytest.raises(ValueError, match=message):
        parse_tta(text)


class LeftHalfBias(nn.Module):
    """Logits that depend on the column (not mirror-symmetric) and on the input."""

    def forward(self, x):
        columns = torch.linspace(0, 1, x.shape[-1]).expand(x.shape[0], 1, x.shape[-2], -1)
        return torch.cat([x[:, :1] + 2 * columns, x[:, 1:2] - columns, x[:, 2:3]], 1)


def test_one_view_is_the_networks_own_probabilities():
    x = torch.randn(2, 3, 8, 10)
    result = augmented_logits(LeftHalfBias(), x, TestTimeAugmentation())
    assert torch.allclose(result, LeftHalfBias()(x).log_softmax(1), atol=1e-6)


def test_flip_averages_the_image_and_its_mirror_mapped_back():
    x, network = torch.randn(2, 3, 8, 10), LeftHalfBias()
    expected = (network(x).softmax(1) + network(x.flip(-1)).flip(-1).softmax(1)) / 2
    result = augmented_logits(network, x, TestTimeAugmentation(flip=True))
    assert torch.allclose(result.exp(), expected, atol=1e-6)
    assert not torch.allclose(result, network(x).log_softmax(1), atol=1e-3)  # the mirror really counted


def test_scales_come_back_at_the_input_size_as_probabilities():
    x = torch.randn(1, 3, 24, 32)
    model = create_model("segnet_basic", 5).eval()
    with torch.no_grad():
        result = augmented_logits(model, x, TestTimeAugmentation((0.75, 1.0, 1.5), True))
    assert result.shape == (1, 5, 24, 32) and result.dtype == torch.float32
    assert torch.allclose(result.exp().sum(1), torch.ones(1, 24, 32), atol=1e-5)


def test_loaded_model_and_evaluate_apply_and_record_tta():
    model = create_model("segnet_basic", 6).eval()
    loaded = LoadedModel(model, SYNTHETIC_META, RAW, None, "test", "segnet_basic", engine="eager")
    images = (torch.rand(2, 3, 32, 48) * 255).to(torch.uint8)
    plain = loaded.predict_logits(images, amp="off")
    loaded.tta = TestTimeAugmentation(flip=True)
    with_flip = loaded.predict_logits(images, amp="off")
    assert with_flip.shape == plain.shape and not torch.allclose(with_flip, plain.log_softmax(1), atol=1e-3)
    dataset = SyntheticRoadScenes("val", count=3, size=(32, 48))
    assert loaded.evaluate(dataset, bf_mode=None, progress=False).metrics["runtime"]["tta"] == "flip"
    assert evaluate(model, dataset, RAW, bf_mode=None, amp="off", progress=False).metrics["runtime"]["tta"] == "off"
    with pytest.raises(ValueError, match="do not combine"):
        loaded.segment_batch([images[0]], mc_samples=2)


def test_cli_tta_in_evaluate_predict_and_its_errors(tmp_path, capsys, few_scenes):
    checkpoint = save_checkpoint(tmp_path / "best.pt", create_model("segnet_basic", 6), "segnet_basic",
                                 SYNTHETIC_META, RAW)
    assert main(["evaluate", "--checkpoint", str(checkpoint), "--out", str(tmp_path / "e"), "--bf", "none",
                 "--tta", "flip,0.5,1"]) == 0
    assert json.loads((tmp_path / "e" / "metrics.json").read_text())["runtime"]["tta"] == "flip,0.5,1"
    assert "tta flip,0.5,1 (4 views)" in capsys.readouterr().out
    image = tmp_path / "in" / "a.png"
    image.parent.mkdir()
    Image.fromarray((torch.rand(32, 48, 3) * 255).to(torch.uint8).numpy()).save(image)
    assert main(["predict", str(image), "--checkpoint", str(checkpoint), "--out", str(tmp_path / "p"),
                 "--tta", "flip"]) == 0
    assert (tmp_path / "p" / "a.png").is_file() and "tta flip (2 views)" in capsys.readouterr().out
    bayesian = save_checkpoint(tmp_path / "bayesian.pt", create_model("bayesian_segnet_basic", 6),
                               "bayesian_segnet_basic", SYNTHETIC_META, RAW)
    assert main(["predict", str(image), "--checkpoint", str(bayesian), "--out", str(tmp_path / "q"),
                 "--tta", "flip", "--mc-samples", "2"]) == 2
    assert "do not combine" in capsys.readouterr().err and not (tmp_path / "q").exists()
    with pytest.raises(SystemExit) as refused:  # argparse's own refusal, before any work
        main(["evaluate", "--checkpoint", str(checkpoint), "--out", str(tmp_path / "x"), "--tta", "9"])
    assert refused.value.code == 2
    assert "outside 0.25 to 4" in capsys.readouterr().err and not (tmp_path / "x").exists()

