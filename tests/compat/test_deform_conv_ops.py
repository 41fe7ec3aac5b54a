"""seg_d2.compat.c_ops.deform_conv (Detectron2's ``_C`` deformable-conv ops) against references.

Detectron2 v0.6 only calls ``_C`` for CUDA tensors, so these CPU tests hand its autograd Functions
tensors of a subclass that reports ``is_cuda``: the Functions then take their CUDA branch, which
calls the ops under test, while the arithmetic stays on the CPU.
"""
import pytest
import torch
import torch.nn.functional as F

import seg_d2  # noqa: F401  (installs the ops as detectron2._C)
from detectron2 import _C
from detectron2.layers.deform_conv import deform_conv, modulated_deform_conv

torch.set_num_threads(1)


class _ClaimsCuda(torch.Tensor):
    @property
    def is_cuda(self):
        return True


def _claims_cuda(t):
    return t.detach().as_subclass(_ClaimsCuda).requires_grad_()


def _plain(t):
    return None if t is None else t.as_subclass(torch.Tensor)


def _pair(v):
    return (v, v) if isinstance(v, int) else tuple(v)


def _inside(y, x, h, w):
    return (y >= 0) & (y < h) & (x >= 0) & (x < w)


def _bilinear_columns(x, offset, kernel, stride, padding, dilation, dg):
    """Sampled values (N, C, kh*kw, Ho, Wo): bilinear interpolation at p0 + p_k + offset.

    Corners outside the image count as zero, which is the boundary rule of the Deformable ConvNets
    kernels (a point at or beyond -1 / size samples nothing).
    """
    n, c, h, w = x.shape
    kh, kw = kernel
    ho, wo = offset.shape[2:]
    off = offset.view(n, dg, kh * kw, 2, ho, wo)
    base_y = (torch.arange(ho) * stride[0] - padding[0]).view(ho, 1)
    base_x = (torch.arange(wo) * stride[1] - padding[1]).view(1, wo)
    ky = (torch.arange(kh) * dilation[0]).repeat_interleave(kw).view(kh * kw, 1, 1)
    kx = (torch.arange(kw) * dilation[1]).repeat(kh).view(kh * kw, 1, 1)
    ys = base_y + ky + off[:, :, :, 0]  # (N, dg, K, Ho, Wo)
    xs = base_x + kx + off[:, :, :, 1]
    flat = x.reshape(n, dg, c // dg, h * w)
    cols = 0
    for cy in (ys.floor(), ys.floor() + 1):
        for cx in (xs.floor(), xs.floor() + 1):
            weight = (1 - (ys - cy).abs()) * (1 - (xs - cx).abs()) * _inside(cy, cx, h, w)
            index = (cy.clamp(0, h - 1) * w + cx.clamp(0, w - 1)).long().view(n, dg, 1, -1)
            values = flat.gather(3, index.expand(-1, -1, c // dg, -1))
            cols = cols + values.view(n, dg, c // dg, kh * kw, ho, wo) * weight[:, :, None]
    return cols.view(n, c, kh * kw, ho, wo)


def reference(x, offset, weight, mask=None, bias=None, stride=1, padding=0, dilation=1,
              groups=1, dg=1):
    """Deformable conv v1/v2 written from the papers: sample, modulate, then a grouped matmul."""
    cout, cin_g, kh, kw = weight.shape
    geometry = _pair(stride), _pair(padding), _pair(dilation)
    cols = _bilinear_columns(x, offset, (kh, kw), *geometry, dg)
    n, c, k, ho, wo = cols.shape
    if mask is not None:
        cols = cols.view(n, dg, c // dg, k, ho, wo) * mask.view(n, dg, 1, k, ho, wo)
    out = torch.einsum(
        "ngckhw,gock->ngohw",
        cols.reshape(n, groups, cin_g, k, ho, wo),
        weight.view(groups, cout // groups, cin_g, k),
    ).reshape(n, cout, ho, wo)
    return out if bias is None else out + bias.view(1, -1, 1, 1)


def _given(**tensors):
    return {k: t for k, t in tensors.items() if t is not None}


def _run_d2(x, offset, weight, mask, bias, stride, padding, dilation, groups, dg, im2col_step=64):
    """Output of Detectron2's Function (modulated iff a mask is given) and the gradients of
    ``sum(output * grad_out)`` w.r.t. each tensor given, by name."""
    leaves = {k: _claims_cuda(t) for k, t in _given(x=x, offset=offset, weight=weight, mask=mask,
                                                    bias=bias).items()}
    geometry = (stride, padding, dilation, groups, dg)
    if mask is None:
        out = deform_conv(leaves["x"], leaves["offset"], leaves["weight"], *geometry, im2col_step)
    else:
        out = modulated_deform_conv(leaves["x"], leaves["offset"], leaves["mask"],
                                    leaves["weight"], leaves.get("bias"), *geometry)
    grad_out = torch.linspace(-1, 1, out.numel(), dtype=out.dtype).view(out.shape)
    grads = torch.autograd.grad(out, list(leaves.values()), grad_out.as_subclass(_ClaimsCuda))
    return _plain(out.detach()), dict(zip(leaves, map(_plain, grads))), grad_out


def _reference_grads(grad_out, **kwargs):
    """``reference(**kwargs)`` and its gradients like :func:`_run_d2`."""
    tensors = {k: kwargs.pop(k) for k in ("x", "offset", "weight", "mask", "bias") if k in kwargs}
    leaves = {k: t.detach().requires_grad_() for k, t in _given(**tensors).items()}
    out = reference(**leaves, **kwargs)
    grads = torch.autograd.grad(out, list(leaves.values()), grad_out)
    return out.detach(), dict(zip(leaves, grads))


def _assert_all_close(got, expected):
    assert got.keys() == expected.keys()
    for k in got:
        torch.testing.assert_close(got[k], expected[k], msg=lambda m: f"{k}: {m}")


def _tensors(n=2, c=4, cout=4, size=(5, 6), k=(3, 3), groups=1, dg=1, stride=1, padding=1,
             dilation=1, offset_scale=2.0, seed=0):
    """Random float64 x, offset, weight, mask, bias for the given geometry."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, c, *size, generator=g, dtype=torch.float64)
    weight = torch.randn(cout, c // groups, *k, generator=g, dtype=x.dtype)
    stride, padding, dilation = _pair(stride), _pair(padding), _pair(dilation)
    ho, wo = (
        (size[d] + 2 * padding[d] - dilation[d] * (k[d] - 1) - 1) // stride[d] + 1 for d in range(2)
    )
    points = dg * k[0] * k[1]
    offset = offset_scale * torch.randn(n, 2 * points, ho, wo, generator=g, dtype=x.dtype)
    mask = torch.rand(n, points, ho, wo, generator=g, dtype=x.dtype)
    bias = torch.randn(cout, generator=g, dtype=x.dtype)
    return x, offset, weight, mask, bias


def test_offset_layout_hand_computed():
    # input value 10*y + x is linear, so bilinear sampling at (y, x) returns exactly 10*y + x
    h, w = 5, 5
    ramp = (10 * torch.arange(h).view(h, 1) + torch.arange(w)).double().view(1, 1, h, w)
    weight = torch.zeros(1, 1, 3, 3, dtype=torch.float64)
    weight[0, 0, 0, 2] = 1.0  # only kernel point (row 0, col 2), i.e. point index 2
    offset = torch.randn(1, 18, 3, 3, dtype=torch.float64)
    offset[0, 4, 1, 1], offset[0, 5, 1, 1] = 0.5, -0.25  # (dy, dx) of point 2 at output (1, 1)
    mask = torch.full((1, 9, 3, 3), 0.5, dtype=torch.float64)
    # output (1, 1), stride 1, no padding: point (0, 2) sits at (1, 3); sampled at (1.5, 2.75)
    out, _, _ = _run_d2(ramp, offset, weight, None, None, 1, 0, 1, 1, 1)
    assert out[0, 0, 1, 1].item() == pytest.approx(10 * 1.5 + 2.75)
    out, _, _ = _run_d2(ramp, offset, weight, mask, None, 1, 0, 1, 1, 1)
    assert out[0, 0, 1, 1].item() == pytest.approx(0.5 * (10 * 1.5 + 2.75))


@pytest.mark.parametrize(
    "stride,padding,dilation,groups", [(1, 0, 1, 1), (2, 1, 1, 2), (1, 2, 2, 1), (2, 2, 2, 4)]
)
@pytest.mark.parametrize("modulated", [False, True])
def test_zero_offset_is_plain_conv(modulated, stride, padding, dilation, groups):
    x, offset, weight, mask, bias = _tensors(
        c=4, cout=8, groups=groups, stride=stride, padding=padding, dilation=dilation
    )
    offset = torch.zeros_like(offset)
    mask, bias = (torch.ones_like(mask), bias) if modulated else (None, None)
    out, grads, grad_out = _run_d2(x, offset, weight, mask, bias, stride, padding, dilation,
                                   groups, 1)
    leaves = {k: t.detach().requires_grad_() for k, t in _given(x=x, weight=weight,
                                                                bias=bias).items()}
    expected = F.conv2d(leaves["x"], leaves["weight"], leaves.get("bias"), stride, padding,
                        dilation, groups)
    torch.testing.assert_close(out, expected.detach())
    expected_grads = torch.autograd.grad(expected, list(leaves.values()), grad_out)
    _assert_all_close({k: grads[k] for k in leaves}, dict(zip(leaves, expected_grads)))


@pytest.mark.parametrize("groups,dg", [(1, 1), (2, 1), (1, 2), (2, 4)])
@pytest.mark.parametrize("modulated", [False, True])
def test_matches_reference_forward_and_backward(modulated, groups, dg):
    # offsets of scale 2 push many samples across the border, exercising the boundary rule
    geometry = dict(stride=2, padding=1, dilation=2, groups=groups, dg=dg)
    x, offset, weight, mask, bias = _tensors(c=4, cout=6, seed=groups * 10 + dg, **geometry)
    mask, bias = (mask, bias) if modulated else (None, None)
    out, grads, grad_out = _run_d2(x, offset, weight, mask, bias, *geometry.values())
    expected, expected_grads = _reference_grads(
        grad_out, x=x, offset=offset, weight=weight, mask=mask, bias=bias, **geometry
    )
    torch.testing.assert_close(out, expected)
    _assert_all_close(grads, expected_grads)


@pytest.mark.parametrize("modulated", [False, True])
def test_gradcheck(modulated):
    x, offset, weight, mask, bias = _tensors(n=1, c=2, cout=2, size=(3, 4), k=(2, 2), groups=2,
                                             dg=2, padding=1, offset_scale=0.7, seed=3)
    if modulated:
        fn = lambda *t: modulated_deform_conv(*t, 1, 1, 1, 2, 2)  # noqa: E731
        inputs = (x, offset, mask, weight, bias)
    else:
        fn = lambda *t: deform_conv(*t, 1, 1, 1, 2, 2)  # noqa: E731
        inputs = (x, offset, weight)
    # autograd materialises undefined output grads as plain tensors, which do not claim CUDA
    inputs = [_claims_cuda(t) for t in inputs]
    assert torch.autograd.gradcheck(fn, inputs, check_undefined_grad=False)


@pytest.mark.parametrize("batch,step", [(3, 2), (4, 2), (5, 64)])
def test_im2col_step_any_batch(batch, step):
    # Detectron2 shrinks im2col_step to a divisor of the batch; chunked grads must still add up
    x, offset, weight, _, _ = _tensors(n=batch, c=2, cout=3, size=(4, 4), seed=batch)
    out, grads, grad_out = _run_d2(x, offset, weight, None, None, 1, 1, 1, 1, 1, step)
    expected, expected_grads = _reference_grads(grad_out, x=x, offset=offset, weight=weight,
                                                padding=1)
    torch.testing.assert_close(out, expected)
    _assert_all_close(grads, expected_grads)


def test_asymmetric_geometry():
    # every (h, w) pair differs, so a swapped kW/kH, dW/dH, padW/padH or dilation argument shows
    geometry = dict(stride=(2, 1), padding=(1, 0), dilation=(1, 2))
    x, offset, weight, mask, bias = _tensors(n=1, c=2, cout=2, size=(5, 7), k=(3, 2), **geometry)
    out, grads, grad_out = _run_d2(x, offset, weight, None, None, *geometry.values(), 1, 1)
    expected, expected_grads = _reference_grads(grad_out, x=x, offset=offset, weight=weight,
                                                **geometry)
    torch.testing.assert_close(out, expected)
    _assert_all_close(grads, expected_grads)

    # Detectron2's ModulatedDeformConv only passes square settings, so call the op directly
    output = torch.empty_like(expected)
    _C.modulated_deform_conv_forward(x, weight, bias, x.new_empty(0), offset, mask, output,
                                     x.new_empty(0), 3, 2, 2, 1, 1, 0, 1, 2, 1, 1, True)
    torch.testing.assert_close(output, reference(x, offset, weight, mask, bias, **geometry))


def _v1_args(weight, group=1, dg=1):
    """kW, kH, dW, dH, padW, padH, dilationW, dilationH, group, deformable_group."""
    kh, kw = weight.shape[2:]
    return [kw, kh, 1, 1, 1, 1, 1, 1, group, dg]


def _buffers(x):
    return x.new_empty(0), x.new_empty(0)


def test_im2col_step_must_divide_batch():
    x, offset, weight, _, _ = _tensors(n=3, c=2, cout=3, size=(4, 4))
    output = x.new_empty(3, 3, 4, 4)
    with pytest.raises(RuntimeError, match="im2col_step"):
        _C.deform_conv_forward(x, weight, offset, output, *_buffers(x), *_v1_args(weight), 2)


def test_v1_in_place_semantics():
    x, offset, weight, _, _ = _tensors(n=4, c=2, cout=3, size=(4, 4), seed=7)
    grad_out = torch.randn(4, 3, 4, 4, dtype=x.dtype)
    output = torch.full((4, 3, 4, 4), 123.0, dtype=x.dtype)
    returned = _C.deform_conv_forward(x, weight, offset, output, *_buffers(x), *_v1_args(weight), 2)
    assert returned == 1  # the C++ op's status code
    expected, ref = _reference_grads(grad_out, x=x, offset=offset, weight=weight, padding=1)
    torch.testing.assert_close(output, expected)  # overwritten

    grad_input, grad_offset = torch.ones_like(x), torch.full_like(offset, 9.0)
    _C.deform_conv_backward_input(x, offset, grad_out, grad_input, grad_offset, weight,
                                  _buffers(x)[0], *_v1_args(weight), 2)
    torch.testing.assert_close(grad_input, 1 + ref["x"])  # accumulated, like the atomicAdd col2im
    torch.testing.assert_close(grad_offset, ref["offset"])  # assigned

    grad_weight = torch.ones_like(weight)
    _C.deform_conv_backward_filter(x, offset, grad_out, grad_weight, *_buffers(x),
                                   *_v1_args(weight), 0.5, 4)
    torch.testing.assert_close(grad_weight, 1 + 0.5 * ref["weight"])  # accumulated, times scale


@pytest.mark.parametrize("with_bias", [False, True])
def test_v2_in_place_semantics(with_bias):
    x, offset, weight, mask, bias = _tensors(n=2, c=2, cout=4, size=(4, 5), groups=2, dg=2, seed=5)
    geometry = [3, 3, 1, 1, 1, 1, 1, 1, 2, 2, with_bias]
    ones, columns = _buffers(x)
    passed_bias = bias if with_bias else x.new_empty(1).fill_(7.0)  # Detectron2's placeholder
    output = torch.full((2, 4, 4, 5), 123.0, dtype=x.dtype)
    _C.modulated_deform_conv_forward(x, weight, passed_bias, ones, offset, mask, output, columns,
                                     *geometry)
    grad_out = torch.randn_like(output)
    expected, ref = _reference_grads(grad_out, x=x, offset=offset, weight=weight, mask=mask,
                                     bias=bias if with_bias else None, padding=1, groups=2, dg=2)
    torch.testing.assert_close(output, expected)  # overwritten

    grads = dict(x=torch.ones_like(x), weight=torch.ones_like(weight),
                 bias=torch.ones_like(passed_bias), offset=torch.full_like(offset, 9.0),
                 mask=torch.full_like(mask, 9.0))
    _C.modulated_deform_conv_backward(
        x, weight, passed_bias, ones, offset, mask, columns, grads["x"], grads["weight"],
        grads["bias"], grads["offset"], grads["mask"], grad_out, *geometry
    )
    accumulated = ("x", "weight", "bias") if with_bias else ("x", "weight")
    expected_grads = {k: 1 + g if k in accumulated else g for k, g in ref.items()}
    if not with_bias:
        expected_grads["bias"] = torch.ones(1, dtype=x.dtype)  # left alone
    _assert_all_close(grads, expected_grads)


def test_bad_shapes_raise():
    x, offset, weight, mask, bias = _tensors(n=1, c=4, cout=4, size=(4, 4), dg=2)
    ones, columns = _buffers(x)
    output = x.new_empty(1, 4, 4, 4)
    with pytest.raises(RuntimeError, match="offset"):  # offset built for dg=2, called with dg=1
        _C.deform_conv_forward(x, weight, offset, output, ones, columns, *_v1_args(weight), 1)
    v2_args = [3, 3, 1, 1, 1, 1, 1, 1]  # kernel_h, kernel_w, stride, padding, dilation (h, w)
    with pytest.raises(RuntimeError, match="group"):  # weight has all 4 channels, group=2
        _C.modulated_deform_conv_forward(x, weight, bias, ones, offset, mask, output, columns,
                                         *v2_args, 2, 2, True)
    with pytest.raises(RuntimeError, match="kernel"):
        _C.modulated_deform_conv_forward(x, weight, bias, ones, offset, mask, output, columns,
                                         3, 2, *v2_args[2:], 1, 2, True)
    with pytest.raises(RuntimeError, match="output"):
        _C.modulated_deform_conv_forward(x, weight, bias, ones, offset, mask, output[:, :2],
                                         columns, *v2_args, 1, 2, True)
