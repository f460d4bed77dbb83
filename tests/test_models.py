import pytest
import torch
from torch import nn

import segnet
from segnet.models import MODELS, count_parameters, create_model, list_models, mc_dropout_predict

ALL = [
    "segnet", "bayesian_segnet", "segnet_basic", "bayesian_segnet_basic",
    "segnet_basic_encoder_addition", "segnet_basic_single_channel_decoder", "bilinear_interpolation",
    "fcn_basic", "fcn_basic_no_addition", "fcn_basic_no_dim_reduction", "fcn_basic_no_addition_no_dim_reduction",
]
# The paper's 1.625 M for the 64-channel FCN variants cannot come from four 8x8, 64->64
# deconvolutions (that alone is 1.049 M on a 0.612 M encoder); we build the architecture the
# paper describes and check its exact count instead (documented in docs/architecture.md).
DERIVED_COUNTS = {"fcn_basic_no_dim_reduction": 1_661_835, "fcn_basic_no_addition_no_dim_reduction": 1_661_835}


def test_registry_lists_all_eleven_models():
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
@pytest.mark.parametrize("size", [(33, 47), (97, 131)])
def test_logits_at_input_size(name, size):
    model = create_model(name, 5)
    model.train()
    x = torch.rand(2, 3, *size)
    out = model(x)
    assert out.shape == (2, 5, *size)
    out.mean().backward()  # trainable end to end
    model.eval()
    with torch.no_grad():
        out = model(x[:1])
    assert out.shape == (1, 5, *size)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("name", ["segnet", "segnet_basic"])
def test_paper_resolution_and_raw_logits(name):
    model = create_model(name, 11).eval()
    with torch.no_grad():
        out = model(torch.rand(1, 3, 360, 480))
    assert out.shape == (1, 11, 360, 480)
    # logits, not probabilities: negative values exist and classes do not sum to one
    assert (out < 0).any()
    assert not torch.allclose(out.sum(1), torch.ones(1, 360, 480), atol=1e-3)


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
