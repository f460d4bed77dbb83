import pytest
import torch
from torch import nn

import segnet
from conftest import torchvision_vgg16_features
from segnet.models import MODELS, count_parameters, create_model, list_models, mc_dropout_predict

ALL = [
    "segnet", "bayesian_segnet", "segnet_basic", "bayesian_segnet_basic",
    "segnet_basic_encoder_addition", "segnet_basic_single_channel_decoder", "bilinear_interpolation",
    "fcn_basic", "fcn_basic_no_addition", "fcn_basic_no_dim_reduction", "fcn_basic_no_addition_no_dim_reduction",
    "fcn8s", "fcn_bilinear", "deeplab_largefov", "deconvnet",
]
# The paper's 1.625 M for the 64-channel FCN variants cannot come from four 8x8, 64->64
# deconvolutions (that alone is 1.049 M on a 0.612 M encoder); we build the architecture the
# paper describes and check its exact count instead (documented in docs/architecture.md).
DERIVED_COUNTS = {"fcn_basic_no_dim_reduction": 1_661_835, "fcn_basic_no_addition_no_dim_reduction": 1_661_835,
                  # not in Table 6; FCN-8s less its three 11-class deconvolutions
                  "fcn_bilinear": 134_373_761 - 11 * 11 * (16 + 16 + 256),
                  # the paper's 1,024-unit cut: 81.9 M, far from Table 6's 877 MB (219 M); see test below
                  "deconvnet": 81_917_259}


def test_registry_lists_every_model():
    assert list_models() == ALL
    assert segnet.list_models() == ALL


@pytest.mark.parametrize("name", ALL)
def test_parameter_count_matches_paper(name):
    params = count_parameters(create_model(name, 11))
    if name in DERIVED_COUNTS:
        assert params == DERIVED_COUNTS[name]
    else:
        paper = MODELS[name].paper_params_m * 1e6
        assert abs(params - paper) / paper < 0.02, f"{name}: {params} vs paper {paper:.0f}"


def test_exact_counts_of_the_two_main_models():
    # hand-derived: 13 encoder + 13 decoder convs (the last one to K), BN on all but the last
    assert count_parameters(create_model("segnet", 11)) == 29_449_355
    # 4 x 7x7 encoder convs, 4 x 7x7 decoder convs, 8 BN, 1x1 classifier
    assert count_parameters(create_model("segnet_basic", 11)) == 9472 + 3 * 200768 + 4 * 200768 + 8 * 128 + 715


@pytest.mark.parametrize("name", ALL)
def test_logits_at_input_size(name):
    # two odd sizes that floor or pad at every pooling level; one model for both, and the
    # backward once: a 7x7 fc6 on a map this small is slow in oneDNN's weight gradient
    # (several seconds per pass for each FCN on an AVX2 CPU), and the graph is the same
    model = create_model(name, 5)
    for i, size in enumerate([(33, 47), (65, 99)]):
        model.train()
        x = torch.rand(2, 3, *size)
        out = model(x)
        assert out.shape == (2, 5, *size)
        if i == 0:
            out.mean().backward()  # trainable end to end: every parameter receives a gradient
            assert all(p.grad is not None for p in model.parameters())
        model.eval()
        with torch.no_grad():
            out = model(x[:1])
        assert out.shape == (1, 5, *size)
        assert torch.isfinite(out).all()


@pytest.mark.parametrize("name", ["segnet", "segnet_basic"])
def test_paper_resolution_and_raw_logits(name):
    model = create_model(name, 11).eval()
    with torch.no_grad():
        out = model(torch.rand(1, 3, 48, 64))
        # 360x480 (45 -> 23 -> 45 rows on the way down and up) on the meta device: the
        # shapes without the computation
        at_paper_size = model.to("meta")(torch.empty(1, 3, 360, 480, device="meta"))
    assert at_paper_size.shape == (1, 11, 360, 480)
    # logits, not probabilities: negative values exist and classes do not sum to one
    assert (out < 0).any()
    assert not torch.allclose(out.sum(1), torch.ones(1, 48, 64), atol=1e-3)


def test_segnet_structure():
    model = create_model("segnet", 11)
    assert isinstance(model.classifier, nn.Conv2d) and model.classifier.kernel_size == (3, 3)
    assert model.classifier.out_channels == 11
    # decoder ReLUs present: every decoder conv is followed by BN and ReLU
    decoder_relus = [m for m in model.decoders.modules() if isinstance(m, nn.ReLU)]
    assert len(decoder_relus) == 12  # 13 decoder convs, the last (classifier) without
    assert len(model.encoder_convs()) == 13


def test_segnet_basic_has_no_decoder_relu():
    model = create_model("segnet_basic", 11)
    assert not any(isinstance(m, nn.ReLU) for m in model.decoders.modules())
    assert isinstance(model.encoder.normalize, nn.LocalResponseNorm)
    assert model.classifier.kernel_size == (1, 1)


def test_too_small_input_names_the_minimum():
    with pytest.raises(ValueError, match="at least 17x17"):
        create_model("segnet", 11)(torch.rand(1, 3, 16, 64))
    with pytest.raises(ValueError, match="at least 9x9"):
        create_model("segnet_basic", 11)(torch.rand(1, 3, 64, 8))


def test_unknown_model_and_bad_options():
    with pytest.raises(ValueError, match="unknown model"):
        create_model("unet", 11)
    with pytest.raises(ValueError, match="bad options"):
        create_model("segnet", 11, depth=3)


@pytest.mark.parametrize("name,expected_calls", [("bayesian_segnet", 6), ("bayesian_segnet_basic", 4)])
def test_bayesian_dropout_placement(name, expected_calls):
    model = create_model(name, 4)
    calls = []
    for m in model.modules():
        if isinstance(m, nn.Dropout):
            assert m.p == 0.5
            m.register_forward_hook(lambda mod, inp, out: calls.append(inp[0].shape[1]))
    model(torch.rand(1, 3, 64, 64))
    assert len(calls) == expected_calls
    assert not any(isinstance(m, nn.Dropout) for m in create_model("segnet", 4).modules())


def test_mc_dropout_mean_softmax_and_variance():
    model = create_model("bayesian_segnet_basic", 4)
    model(torch.rand(2, 3, 32, 32))  # one training step's worth of BN statistics
    bn_before = model.encoder.stages[0][1].running_mean.clone()
    x = torch.rand(2, 3, 32, 32)

    torch.manual_seed(1)
    mean, uncertainty = mc_dropout_predict(model, x, samples=5)
    # reference: stack the five samples and take the population variance
    torch.manual_seed(1)
    model.eval()
    for m in model.modules():
        if isinstance(m, nn.Dropout):
            m.train()
    with torch.no_grad():
        stack = torch.stack([model(x).softmax(1) for _ in range(5)])
    torch.testing.assert_close(mean, stack.mean(0), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(uncertainty, stack.var(0, unbiased=False).mean(1), rtol=1e-4, atol=1e-7)

    assert mean.shape == (2, 4, 32, 32) and uncertainty.shape == (2, 32, 32)
    torch.testing.assert_close(mean.sum(1), torch.ones(2, 32, 32))
    assert (uncertainty > 0).any()
    assert torch.equal(model.encoder.stages[0][1].running_mean, bn_before)  # BN frozen


def test_mc_dropout_restores_mode_and_rejects_deterministic_models():
    model = create_model("bayesian_segnet_basic", 3).train()
    mean, uncertainty = mc_dropout_predict(model, torch.rand(1, 3, 32, 32), samples=1)
    assert model.training
    assert torch.count_nonzero(uncertainty) == 0  # one sample has no spread
    with pytest.raises(ValueError, match="no dropout"):
        mc_dropout_predict(create_model("segnet_basic", 3), torch.rand(1, 3, 32, 32))


# --- the paper's comparison networks ---------------------------------------------------

@pytest.mark.slow
def test_comparison_networks_follow_their_papers():
    from segnet.models.comparison import FCN, DeconvNet, DeepLabLargeFOV

    # DeconvNet with the original 4,096-unit fc6/fc7 and no BN: the 252 M the reference gives
    assert count_parameters(DeconvNet(11, batch_norm=False, fc_channels=4096)) == 251_771_595
    # FCN-8s without the paper's BN: the original's 134.3 M (VGG16 convs, fc6 7x7x512x4096, fc7, scores, deconvs)
    vgg_convs = 14_714_688
    fc = 512 * 4096 * 49 + 4096 + 4096 * 4096 + 4096
    scores = (4096 + 512 + 256) * 11 + 3 * 11
    deconvs = 11 * 11 * (16 + 16 + 256)
    assert count_parameters(FCN(11, batch_norm=False)) == vgg_convs + fc + scores + deconvs
    # DeepLab-LargeFOV: fc6 3x3 dilation 12 with 1,024 channels, fc7 1x1, classifier
    fc = 512 * 1024 * 9 + 1024 + 1024 * 1024 + 1024 + 1024 * 11 + 11
    assert count_parameters(DeepLabLargeFOV(11, batch_norm=False)) == vgg_convs + fc


@pytest.mark.parametrize("name", ["fcn8s", "fcn_bilinear", "deeplab_largefov", "deconvnet"])
def test_comparison_networks_batch_norm_and_dropout_are_options(name):
    with_options = create_model(name, 5)
    assert any(isinstance(m, nn.BatchNorm2d) for m in with_options.modules())
    assert any(isinstance(m, nn.Dropout) and m.p == 0.5 for m in with_options.modules())
    plain = MODELS[name].builder(5, batch_norm=False, dropout=0.0)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in plain.modules())
    assert all(m.p == 0.0 for m in plain.modules() if isinstance(m, nn.Dropout))
    x = torch.rand(1, 3, 35, 51)
    with torch.no_grad():
        assert plain.eval()(x).shape == (1, 5, 35, 51)


def test_deeplab_scores_come_out_at_one_eighth_then_are_upsampled():
    model = create_model("deeplab_largefov", 11).eval()
    shapes = []
    model.classifier.register_forward_hook(lambda module, inputs, output: shapes.append(tuple(output.shape)))
    with torch.no_grad():  # on the meta device: shapes only
        out = model.to("meta")(torch.empty(1, 3, 360, 480, device="meta"))
    assert shapes == [(1, 11, 45, 60)] and out.shape == (1, 11, 360, 480)  # 45x60, as the paper states


def test_fcn_deconvolutions_start_as_bilinear_upsampling():
    from segnet.models.comparison import bilinear_kernel

    model = create_model("fcn8s", 3)
    assert torch.equal(model.up8.weight, bilinear_kernel(3, 16))
    scores = torch.rand(1, 3, 6, 8)
    up = model.up8(scores, output_size=(48, 64))
    reference = torch.nn.functional.interpolate(scores, size=(48, 64), mode="bilinear", align_corners=False)
    assert torch.allclose(up[..., 8:-8, 8:-8], reference[..., 8:-8, 8:-8], atol=1e-5)  # away from the border


@pytest.mark.parametrize("name", ["fcn8s", "deeplab_largefov", "deconvnet"])
def test_comparison_networks_take_the_imagenet_encoder(name, tmp_path):
    from segnet.models.init import VGG16_CONV_INDICES

    vgg = torchvision_vgg16_features()
    torch.save(vgg.state_dict(), tmp_path / "vgg16.pth")
    model = create_model(name, 11, encoder_weights=tmp_path / "vgg16.pth")
    assert len(model.encoder_convs()) == 13
    for conv, index in zip(model.encoder_convs(), VGG16_CONV_INDICES):
        assert torch.equal(conv.weight, vgg[index].weight)
