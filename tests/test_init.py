import urllib.error

import pytest
import torch
from torch import nn

from conftest import torchvision_vgg16_features
from segnet.models import create_model
from segnet.models.init import VGG16_CONV_INDICES


def snapshot(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


def decoder_keys(state):
    return [k for k in state if not k.startswith("encoders.")]


def test_he_init_and_zero_bias():
    model = create_model("segnet_basic", 11)
    conv = model.decoders[0][0]
    fan_in = conv.in_channels * 7 * 7
    assert abs(conv.weight.std().item() - (2 / fan_in) ** 0.5) < 0.1 * (2 / fan_in) ** 0.5
    assert torch.count_nonzero(conv.bias) == 0


def test_loads_torchvision_vgg16_layout_into_encoder_only(tmp_path):
    vgg = torchvision_vgg16_features()
    path = tmp_path / "vgg16.pth"
    torch.save(vgg.state_dict(), path)
    model = create_model("segnet", 11)
    before = snapshot(model)
    loaded = model.load_encoder(path)
    assert len(loaded) == 26
    after = model.state_dict()
    for conv, index in zip(model.encoder_convs(), VGG16_CONV_INDICES):
        assert torch.equal(conv.weight, vgg[index].weight)
        assert torch.equal(conv.bias, vgg[index].bias)
    for key in decoder_keys(before):
        assert torch.equal(before[key], after[key]), key
    # encoder batch norms are not part of VGG16 and stay as initialised
    for m in model.encoders.modules():
        if isinstance(m, nn.BatchNorm2d):
            assert torch.all(m.weight == 1)


def test_shared_imagenet_weights_fill_every_encoder_conv(vgg16_weights):
    # same seed, with and without the weights: every encoder conv changed, every decoder layer did not
    torch.manual_seed(0)
    fresh = create_model("segnet", 11)
    torch.manual_seed(0)
    loaded = create_model("segnet", 11, encoder_weights=vgg16_weights)
    fresh_state, loaded_state = fresh.state_dict(), loaded.state_dict()
    for conv_fresh, conv_loaded in zip(fresh.encoder_convs(), loaded.encoder_convs()):
        assert not torch.equal(conv_fresh.weight, conv_loaded.weight)
    for key in decoder_keys(fresh_state):
        assert torch.equal(fresh_state[key], loaded_state[key]), key
    state = torch.load(vgg16_weights, weights_only=True)
    for conv, index in zip(loaded.encoder_convs(), VGG16_CONV_INDICES):
        assert torch.equal(conv.weight, state[f"features.{index}.weight"])


def test_bad_weights_file_leaves_model_untouched(tmp_path):
    vgg = torchvision_vgg16_features().state_dict()
    del vgg["28.bias"]  # torchvision's `features` module has keys without the prefix
    path = tmp_path / "broken.pth"
    torch.save(vgg, path)
    model = create_model("segnet", 11)
    before = snapshot(model)
    with pytest.raises(ValueError, match="features.28.bias"):
        model.load_encoder(path)
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_missing_file_and_non_vgg_model(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        create_model("segnet", 11, encoder_weights=tmp_path / "nope.pth")
    with pytest.raises(ValueError, match="no VGG16 encoder"):
        create_model("segnet_basic", 11, encoder_weights="imagenet")


def test_imagenet_offline_says_how_to_pass_a_file(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))

    def offline(*args, **kwargs):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    with pytest.raises(FileNotFoundError, match="encoder_weights='path/to/vgg16.pth'"):
        create_model("segnet", 11, encoder_weights="imagenet")
