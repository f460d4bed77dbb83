import pytest
import torch
import torch.nn.functional as F

from segnet.models.pooling import (
    check_input_size,
    max_pool_with_indices,
    max_unpool,
    max_unpool_index_free,
    min_input_size,
)

SIZES = [(8, 8), (45, 61), (97, 131), (1, 1), (3, 2)]


def naive_pool_unpool(x: torch.Tensor) -> torch.Tensor:
    """Reference: loop over 2x2 windows (ceil mode), keep the first maximum, zero the rest."""
    out = torch.zeros_like(x)
    n, c, h, w = x.shape
    for b in range(n):
        for ch in range(c):
            for i in range(0, h, 2):
                for j in range(0, w, 2):
                    window = x[b, ch, i : i + 2, j : j + 2]
                    flat = window.flatten()
                    k = int(torch.argmax(flat))
                    wi, wj = divmod(k, window.shape[1])
                    out[b, ch, i + wi, j + wj] = flat[k]
    return out


@pytest.mark.parametrize("size", SIZES)
def test_pool_uses_ceil_mode_and_records_size(size):
    x = torch.randn(2, 3, *size)
    pooled, record = max_pool_with_indices(x)
    assert pooled.shape[-2:] == tuple((s + 1) // 2 for s in size)
    assert record.size == size
    assert record.indices.shape == pooled.shape


@pytest.mark.parametrize("size", SIZES)
def test_unpool_places_values_at_argmax_and_zeros_elsewhere(size):
    x = torch.randn(2, 3, *size)
    pooled, record = max_pool_with_indices(x)
    up = max_unpool(pooled, record)
    assert up.shape == x.shape
    # matches a loop-over-windows reference exactly (values unique with probability 1)
    torch.testing.assert_close(up, naive_pool_unpool(x), rtol=0, atol=0)
    nonzero = up != 0
    assert int(nonzero.sum()) == pooled.numel()
    # every non-zero sits where the input held that same maximum
    torch.testing.assert_close(up[nonzero], x[nonzero], rtol=0, atol=0)


def test_unpool_matches_torch_max_unpool2d_on_odd_sizes():
    x = torch.randn(1, 4, 45, 61)
    pooled, record = max_pool_with_indices(x)
    ours = max_unpool(pooled, record)
    theirs = F.max_unpool2d(pooled, record.indices, 2, 2, output_size=record.size)
    torch.testing.assert_close(ours, theirs, rtol=0, atol=0)


@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_native_kernel_and_deterministic_scatter_agree_bit_for_bit(layout, dtype):
    """max_unpool runs F.max_unpool2d, and a scatter under deterministic mode: same outputs
    and gradients, at an odd size, in either layout; the native kernel keeps the layout."""
    x = torch.randn(2, 6, 45, 61).relu().to(dtype).contiguous(memory_format=layout)
    pooled, record = max_pool_with_indices(x)
    results = []
    for deterministic in (False, True):
        previous = torch.are_deterministic_algorithms_enabled()
        torch.use_deterministic_algorithms(deterministic)
        try:
            source = torch.randn_like(pooled).requires_grad_(True) if not results else results[0][2]
            source.grad = None
            out = max_unpool(source, record)
            out.backward(torch.ones_like(out) * torch.arange(out.numel(), dtype=dtype).view_as(out) % 7)
            results.append((out.detach(), source.grad.clone(), source))
        finally:
            torch.use_deterministic_algorithms(previous)
    (native, native_grad, _), (scatter, scatter_grad, _) = results
    assert torch.equal(native, scatter) and torch.equal(native_grad, scatter_grad)
    assert native.shape == (2, 6, 45, 61)
    assert native.is_contiguous(memory_format=layout)


def test_gradients_flow_only_to_recorded_positions():
    x = torch.randn(1, 2, 7, 9)
    pooled, record = max_pool_with_indices(x)
    source = pooled.detach().requires_grad_(True)
    upstream = torch.randn(1, 2, 7, 9)
    (max_unpool(source, record) * upstream).sum().backward()
    # d(out)/d(source) is the upstream gradient gathered at the recorded positions
    expected = upstream.flatten(2).gather(2, record.indices.flatten(2)).view_as(pooled)
    torch.testing.assert_close(source.grad, expected, rtol=0, atol=0)

    # and through pooling + unpooling, only argmax positions of the input receive gradient
    x.requires_grad_(True)
    pooled, record = max_pool_with_indices(x)
    max_unpool(pooled, record).sum().backward()
    assert int((x.grad != 0).sum()) == pooled.numel()
    argmax_mask = torch.zeros(x.numel() // 1, dtype=torch.bool).view(1, 2, -1)
    argmax_mask.scatter_(2, record.indices.flatten(2), True)
    assert torch.equal(x.grad != 0, argmax_mask.view_as(x))


def test_index_free_unpool_equals_index_unpool_when_maxima_are_unique():
    x = torch.randn(2, 3, 45, 61)
    pooled, record = max_pool_with_indices(x)
    torch.testing.assert_close(max_unpool_index_free(pooled, x), max_unpool(pooled, record), rtol=0, atol=0)


def test_index_free_unpool_breaks_ties_like_pooling_does():
    # tied maxima (and all-zero windows after a ReLU): the first in raster order, like the indices
    x = torch.tensor([[[[1.0, 1.0, 0.0], [0.0, 0.5, 0.0], [2.0, 2.0, 0.0]]]])
    pooled, record = max_pool_with_indices(x)
    decoded = torch.randn_like(pooled)  # a decoder unpools other values than the pooled ones
    expected = max_unpool(decoded, record)
    assert torch.equal(max_unpool_index_free(decoded, x), expected)
    assert expected[0, 0, 0, 0] != 0 and expected[0, 0, 0, 1] == 0
    relu = torch.relu(torch.randn(2, 4, 33, 47))
    pooled, record = max_pool_with_indices(relu)
    decoded = torch.randn_like(pooled)
    assert torch.equal(max_unpool_index_free(decoded, relu), max_unpool(decoded, record))


@pytest.mark.parametrize("name", ["segnet", "segnet_basic", "segnet_basic_encoder_addition", "bayesian_segnet_basic"])
def test_index_free_models_give_identical_outputs(name):
    from segnet.models import create_model, use_index_free_unpooling

    model = create_model(name, 5).eval()
    x = torch.rand(1, 3, 37, 51)
    with torch.no_grad():
        expected = model(x)
        use_index_free_unpooling(model)
        assert torch.equal(model(x), expected)
    use_index_free_unpooling(model, False)
    assert not model.encoder.index_free if hasattr(model, "encoder") else not model.index_free


def test_min_input_size_and_clear_error():
    assert min_input_size(5) == 17
    assert min_input_size(4) == 9
    check_input_size(torch.zeros(1, 3, 17, 17), 5, "SegNet")
    with pytest.raises(ValueError, match="at least 17x17"):
        check_input_size(torch.zeros(1, 3, 16, 400), 5, "SegNet")
    with pytest.raises(ValueError, match=r"\(N, C, H, W\)"):
        check_input_size(torch.zeros(3, 32, 32), 5, "SegNet")


def test_models_train_under_deterministic_algorithms():
    """Our unpooling is a scatter to unique positions (forward) and a gather (backward), not
    F.max_unpool2d, which raises in deterministic mode; index-free mode has no scatter at all."""
    from segnet.models import create_model, use_index_free_unpooling

    model = create_model("segnet_basic", 4)
    x = torch.rand(1, 3, 33, 41)
    previous = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    try:
        with pytest.raises(RuntimeError, match="deterministic"):
            pooled, indices = torch.nn.functional.max_pool2d(x, 2, return_indices=True)
            torch.nn.functional.max_unpool2d(pooled, indices, 2)
        first = torch.autograd.grad(model(x).sum(), model.classifier.weight)[0]
        use_index_free_unpooling(model)
        second = torch.autograd.grad(model(x).sum(), model.classifier.weight)[0]
        assert torch.equal(first, second)
    finally:
        torch.use_deterministic_algorithms(previous)
