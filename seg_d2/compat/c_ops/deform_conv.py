"""Deformable convolution ops of ``detectron2._C``: v1 :paper:`deformconv`, v2 :paper:`deformconv2`.

Same signatures and in-place semantics as Detectron2 v0.6's ``deform_conv_cuda.cu``; the arithmetic
is :func:`torchvision.ops.deform_conv2d`, whose offset layout is the one Detectron2 uses:
``(N, deformable_group * 2 * kh * kw, Ho, Wo)`` with a (dy, dx) pair per kernel point in row-major
kernel order, and mask ``(N, deformable_group * kh * kw, Ho, Wo)``. Gradients come from autograd
through that op. The ``columns``/``ones`` scratch buffers are accepted and left untouched, as the
C++ code only rebinds them locally. Bad shapes raise ``RuntimeError`` like the C++ ``TORCH_CHECK``.

What each op does with the tensors it is handed, mirroring the C++ kernels:

- ``output``: overwritten;
- ``grad_offset``/``grad_mask``: overwritten (``col2im_coord`` assigns);
- ``grad_input``: accumulated (``col2im`` uses atomicAdd);
- ``grad_weight``/``grad_bias``: accumulated (``addmm_`` with beta=1; ``scale`` multiplies the
  weight gradient of ``deform_conv_backward_filter``).
"""
import torch
from torchvision.ops import deform_conv2d

__all__ = [
    "deform_conv_forward",
    "deform_conv_backward_input",
    "deform_conv_backward_filter",
    "modulated_deform_conv_forward",
    "modulated_deform_conv_backward",
]


def _check(cond, message):
    if not cond:
        raise RuntimeError(message)


def _output_hw(input, kernel, stride, padding, dilation):
    """Output (height, width) of a convolution over ``input``; all pairs are (h, w)."""
    size = tuple(
        (input.size(2 + d) + 2 * padding[d] - (dilation[d] * (kernel[d] - 1) + 1)) // stride[d] + 1
        for d in range(2)
    )
    _check(min(size) >= 1, f"output size {size} too small, input of shape {tuple(input.shape)}")
    return size


def _check_shapes(input, weight, offset, mask, kernel, stride, padding, dilation, group, dg):
    """Validate every shape and return the expected output shape (N, Cout, Ho, Wo)."""
    _check(input.dim() == 4, f"4D input expected, got {input.dim()}D")
    _check(weight.dim() == 4, f"4D weight (Cout, Cin/group, kh, kw) expected, got {weight.dim()}D")
    _check(
        tuple(weight.shape[2:]) == tuple(kernel),
        f"kernel size (kh, kw)={tuple(kernel)} does not match weight {tuple(weight.shape)}",
    )
    _check(
        min(kernel) > 0 and min(stride) > 0 and min(dilation) > 0 and min(padding) >= 0,
        f"bad kernel {kernel}, stride {stride}, padding {padding} or dilation {dilation}",
    )
    _check(group > 0 and dg > 0, f"group={group} and deformable_group={dg} must be positive")
    n, channels = input.shape[:2]
    _check(
        channels == weight.size(1) * group,
        f"input has {channels} channels, weight expects {weight.size(1)} x group {group}",
    )
    _check(
        weight.size(0) % group == 0,
        f"{weight.size(0)} output channels not divisible by group {group}",
    )
    _check(channels % dg == 0, f"{channels} input channels not divisible by deformable_group {dg}")
    ho, wo = _output_hw(input, kernel, stride, padding, dilation)
    points = dg * kernel[0] * kernel[1]
    _check(
        tuple(offset.shape) == (n, 2 * points, ho, wo),
        f"offset of shape {tuple(offset.shape)}, expected {(n, 2 * points, ho, wo)}",
    )
    if mask is not None:
        _check(
            tuple(mask.shape) == (n, points, ho, wo),
            f"mask of shape {tuple(mask.shape)}, expected {(n, points, ho, wo)}",
        )
    return (n, weight.size(0), ho, wo)


def _check_like(name, tensor, shape):
    _check(
        tuple(tensor.shape) == tuple(shape),
        f"{name} of shape {tuple(tensor.shape)}, expected {tuple(shape)}",
    )


def _batch_chunks(batch, im2col_step):
    """Slices of ``im2col_step`` images: the C++ code views the batch as (N / step, step, ...)."""
    _check(
        im2col_step > 0 and batch % im2col_step == 0,
        f"im2col_step {im2col_step} must divide the batch size {batch}",
    )
    return [slice(i, i + im2col_step) for i in range(0, batch, im2col_step)]


def _conv(input, weight, offset, mask, bias, stride, padding, dilation):
    # torchvision infers group from weight.size(1) and deformable_group from offset.size(1),
    # both validated by _check_shapes.
    return deform_conv2d(
        input, offset, weight, bias, stride=stride, padding=padding, dilation=dilation, mask=mask
    )


def _conv_grads(grad_output, tensors, wanted, conv_args):
    """Gradients of ``sum(conv(**tensors) * grad_output)`` w.r.t. the names in ``wanted``."""
    leaves = {
        k: None if t is None else t.detach().requires_grad_(k in wanted)
        for k, t in tensors.items()
    }
    with torch.enable_grad():  # Detectron2's backward runs under once_differentiable (no grad)
        out = _conv(**leaves, **conv_args)
        grads = torch.autograd.grad(out, [leaves[k] for k in wanted], grad_output)
    return dict(zip(wanted, grads))


def _geometry(kh, kw, stride_h, stride_w, pad_h, pad_w, dilation_h, dilation_w):
    """Kernel size and torchvision's keyword arguments, all as (h, w) pairs."""
    return (kh, kw), dict(
        stride=(stride_h, stride_w), padding=(pad_h, pad_w), dilation=(dilation_h, dilation_w)
    )


def deform_conv_forward(
    input, weight, offset, output, columns, ones, kW, kH, dW, dH, padW, padH,
    dilationW, dilationH, group, deformable_group, im2col_step,
):
    """Deformable convolution v1 (no bias) of ``input``, written into ``output``."""
    kernel, conv_args = _geometry(kH, kW, dH, dW, padH, padW, dilationH, dilationW)
    shape = _check_shapes(input, weight, offset, None, kernel, **conv_args,
                          group=group, dg=deformable_group)
    _check_like("output", output, shape)
    with torch.no_grad():
        for s in _batch_chunks(input.size(0), im2col_step):
            output[s] = _conv(input[s], weight, offset[s], None, None, **conv_args)
    return 1


def deform_conv_backward_input(
    input, offset, gradOutput, gradInput, gradOffset, weight, columns, kW, kH, dW, dH,
    padW, padH, dilationW, dilationH, group, deformable_group, im2col_step,
):
    """Adds d(loss)/d(input) to ``gradInput`` and writes d(loss)/d(offset) into ``gradOffset``."""
    kernel, conv_args = _geometry(kH, kW, dH, dW, padH, padW, dilationH, dilationW)
    shape = _check_shapes(input, weight, offset, None, kernel, **conv_args,
                          group=group, dg=deformable_group)
    _check_like("gradOutput", gradOutput, shape)
    _check_like("gradInput", gradInput, input.shape)
    _check_like("gradOffset", gradOffset, offset.shape)
    for s in _batch_chunks(input.size(0), im2col_step):
        tensors = dict(input=input[s], weight=weight, offset=offset[s], mask=None, bias=None)
        grads = _conv_grads(gradOutput[s], tensors, ("input", "offset"), conv_args)
        with torch.no_grad():
            gradInput[s] += grads["input"]
            gradOffset[s] = grads["offset"]
    return 1


def deform_conv_backward_filter(
    input, offset, gradOutput, gradWeight, columns, ones, kW, kH, dW, dH, padW, padH,
    dilationW, dilationH, group, deformable_group, scale, im2col_step,
):
    """Adds ``scale`` * d(loss)/d(weight) to ``gradWeight`` (the weight is never read)."""
    kernel, conv_args = _geometry(kH, kW, dH, dW, padH, padW, dilationH, dilationW)
    # the C++ op has no weight argument: the gradient does not depend on the weight's values
    weight = torch.zeros_like(gradWeight)
    shape = _check_shapes(input, weight, offset, None, kernel, **conv_args,
                          group=group, dg=deformable_group)
    _check_like("gradOutput", gradOutput, shape)
    for s in _batch_chunks(input.size(0), im2col_step):
        tensors = dict(input=input[s], weight=weight, offset=offset[s], mask=None, bias=None)
        grad = _conv_grads(gradOutput[s], tensors, ("weight",), conv_args)["weight"]
        with torch.no_grad():
            gradWeight.add_(grad, alpha=scale)
    return 1


def _checked_bias(bias, weight, with_bias):
    if not with_bias:
        return None  # Detectron2 then passes a 1-element placeholder
    _check_like("bias", bias, (weight.size(0),))
    return bias


def modulated_deform_conv_forward(
    input, weight, bias, ones, offset, mask, output, columns, kernel_h, kernel_w,
    stride_h, stride_w, pad_h, pad_w, dilation_h, dilation_w, group, deformable_group, with_bias,
):
    """Modulated deformable convolution (v2), plus ``bias`` if ``with_bias``, into ``output``."""
    kernel, conv_args = _geometry(kernel_h, kernel_w, stride_h, stride_w, pad_h, pad_w,
                                  dilation_h, dilation_w)
    shape = _check_shapes(input, weight, offset, mask, kernel, **conv_args,
                          group=group, dg=deformable_group)
    _check_like("output", output, shape)
    bias = _checked_bias(bias, weight, with_bias)
    with torch.no_grad():
        output.copy_(_conv(input, weight, offset, mask, bias, **conv_args))


def modulated_deform_conv_backward(
    input, weight, bias, ones, offset, mask, columns, grad_input, grad_weight, grad_bias,
    grad_offset, grad_mask, grad_output, kernel_h, kernel_w, stride_h, stride_w, pad_h, pad_w,
    dilation_h, dilation_w, group, deformable_group, with_bias,
):
    """Gradients of the modulated op; ``grad_bias`` is left alone unless ``with_bias``."""
    kernel, conv_args = _geometry(kernel_h, kernel_w, stride_h, stride_w, pad_h, pad_w,
                                  dilation_h, dilation_w)
    shape = _check_shapes(input, weight, offset, mask, kernel, **conv_args,
                          group=group, dg=deformable_group)
    _check_like("grad_output", grad_output, shape)
    bias = _checked_bias(bias, weight, with_bias)
    tensors = dict(input=input, weight=weight, offset=offset, mask=mask, bias=bias)
    # offset/mask gradients are assigned, the others accumulated (see the module docstring)
    assigned = {"offset": grad_offset, "mask": grad_mask}
    accumulated = {"input": grad_input, "weight": grad_weight}
    if with_bias:
        accumulated["bias"] = grad_bias
    for name, target in {**assigned, **accumulated}.items():
        _check_like(f"grad_{name}", target, tensors[name].shape)
    grads = _conv_grads(grad_output, tensors, tuple(assigned) + tuple(accumulated), conv_args)
    with torch.no_grad():
        for name, target in assigned.items():
            target.copy_(grads[name])
        for name, target in accumulated.items():
            target.add_(grads[name])
