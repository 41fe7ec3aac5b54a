"""``roi_align_rotated_forward`` / ``roi_align_rotated_backward`` of Detectron2 v0.6's ``_C``.

Each output bin averages a grid of bilinear samples taken on the ROI's rotated frame. The C++ rules
are kept: coordinates are continuous with pixel centers at +0.5 (the ROI is shifted by -0.5 pixel, i.e.
ROIAlign's aligned=True), a ROI point (xx, yy) relative to the ROI center maps to the feature map as
y = yy cos(a) - xx sin(a) + cy, x = yy sin(a) + xx cos(a) + cx, samples with y < -1, y > H, x < -1 or
x > W are 0, others are clamped into the map.

Sampling is a fixed sparse linear map from the feature map to the output; forward gathers through it
and backward scatter-adds through the very same weights, so backward is its exact adjoint.
"""
import torch

__all__ = ["roi_align_rotated_forward", "roi_align_rotated_backward"]

_MAX_GATHERED = 1 << 23  # gathered values (ROIs x bins x samples x channels) held at once


def _check_args(rois, pooled_height, pooled_width, batch_size):
    if rois.dim() != 2 or rois.shape[1] != 6:
        raise ValueError(f"rois must be (K, 6) (batch_idx, x_ctr, y_ctr, w, h, angle), got {tuple(rois.shape)}")
    if pooled_height <= 0 or pooled_width <= 0:
        raise ValueError(f"pooled size must be positive, got {pooled_height}x{pooled_width}")
    if len(rois) == 0:
        return
    if (rois[:, 3] < 0).any() or (rois[:, 4] < 0).any():
        raise ValueError("ROIs in ROIAlignRotated do not have non-negative size!")
    batch_idx = rois[:, 0]
    if (batch_idx < 0).any() or (batch_idx >= batch_size).any():
        raise ValueError(f"ROI batch indices must lie in [0, {batch_size}), got {batch_idx.unique().tolist()}")


def _grid_size(length: torch.Tensor, pooled: int, sampling_ratio: int) -> torch.Tensor:
    """Samples per bin along one axis: sampling_ratio, or ceil(ROI length / bins) when it is <= 0."""
    if sampling_ratio > 0:
        return torch.full_like(length, sampling_ratio, dtype=torch.long)
    return torch.ceil(length / pooled).long()


def _bilinear(coord: torch.Tensor, size: int):
    """Lower/upper pixel and weight of the upper pixel along one axis (C++ clamping rules)."""
    coord = coord.clamp(min=0)
    low = coord.floor().long()
    at_end = low >= size - 1
    low = torch.where(at_end, size - 1, low)
    high = torch.where(at_end, size - 1, low + 1)
    frac = torch.where(at_end, 0.0, coord - low)
    return low, high, frac


def _sampling_plan(rois, spatial_scale, pooled_h, pooled_w, sampling_ratio, height, width, channels):
    """Yields (roi ids, flat pixel indices, weights), indices into the (N*H*W) pixels and both shaped
    (k, pooled_h * pooled_w, 4 * samples per bin); ROIs are grouped by grid size and chunked."""
    rois = rois.double()
    cx = rois[:, 1] * spatial_scale - 0.5
    cy = rois[:, 2] * spatial_scale - 0.5
    roi_w, roi_h = rois[:, 3] * spatial_scale, rois[:, 4] * spatial_scale
    theta = torch.deg2rad(rois[:, 5])
    grid_h = _grid_size(roi_h, pooled_h, sampling_ratio)
    grid_w = _grid_size(roi_w, pooled_w, sampling_ratio)
    keys = grid_h * (int(grid_w.max()) + 1) + grid_w
    for key in keys.unique().tolist():
        group = (keys == key).nonzero()[:, 0]
        gh, gw = int(grid_h[group[0]]), int(grid_w[group[0]])
        per_roi = pooled_h * pooled_w * 4 * gh * gw * channels
        step = max(1, _MAX_GATHERED // max(per_roi, 1))
        for ids in group.split(step):
            ph = torch.arange(pooled_h, dtype=rois.dtype, device=rois.device)[None, :, None, None, None]
            pw = torch.arange(pooled_w, dtype=rois.dtype, device=rois.device)[None, None, :, None, None]
            iy = torch.arange(gh, dtype=rois.dtype, device=rois.device)[None, None, None, :, None] + 0.5
            ix = torch.arange(gw, dtype=rois.dtype, device=rois.device)[None, None, None, None, :] + 0.5
            shape = (-1, 1, 1, 1, 1)
            bin_h, bin_w = (roi_h[ids] / pooled_h).view(shape), (roi_w[ids] / pooled_w).view(shape)
            yy = -roi_h[ids].view(shape) / 2 + ph * bin_h + iy * bin_h / gh
            xx = -roi_w[ids].view(shape) / 2 + pw * bin_w + ix * bin_w / gw
            cos, sin = theta[ids].cos().view(shape), theta[ids].sin().view(shape)
            y = yy * cos - xx * sin + cy[ids].view(shape)
            x = yy * sin + xx * cos + cx[ids].view(shape)
            inside = (y >= -1) & (y <= height) & (x >= -1) & (x <= width)
            y0, y1, ly = _bilinear(y, height)
            x0, x1, lx = _bilinear(x, width)
            base = rois[ids, 0].long().view(shape) * (height * width)
            index = torch.stack([y0 * width + x0, y0 * width + x1, y1 * width + x0, y1 * width + x1], -1)
            weight = torch.stack([(1 - ly) * (1 - lx), (1 - ly) * lx, ly * (1 - lx), ly * lx], -1)
            weight = weight * inside[..., None] / max(gh * gw, 1)
            flat = (len(ids), pooled_h * pooled_w, -1)
            yield ids, (index + base[..., None]).reshape(flat), weight.reshape(flat)


def roi_align_rotated_forward(input, rois, spatial_scale, pooled_height, pooled_width, sampling_ratio):
    """(N, C, H, W) features, (K, 6) rois -> (K, C, pooled_height, pooled_width)."""
    if input.dim() != 4:
        raise ValueError(f"input must be NCHW, got shape {tuple(input.shape)}")
    if rois.dtype != input.dtype or rois.device != input.device:
        raise TypeError(f"rois ({rois.dtype}, {rois.device}) must match input ({input.dtype}, {input.device})")
    batch, channels, height, width = input.shape
    _check_args(rois, pooled_height, pooled_width, batch)
    output = input.new_zeros(len(rois), channels, pooled_height, pooled_width)
    if len(rois) == 0 or input.numel() == 0:
        return output
    pixels = input.permute(0, 2, 3, 1).reshape(-1, channels)
    plan = _sampling_plan(
        rois, spatial_scale, pooled_height, pooled_width, sampling_ratio, height, width, channels
    )
    for ids, index, weight in plan:
        values = pixels[index]  # (k, bins, samples, C)
        pooled = (values * weight.to(input.dtype)[..., None]).sum(2)
        output[ids] = pooled.transpose(1, 2).reshape(len(ids), channels, pooled_height, pooled_width)
    return output


def roi_align_rotated_backward(
    grad, rois, spatial_scale, pooled_height, pooled_width, batch_size, channels, height, width, sampling_ratio
):
    """Gradient w.r.t. the (batch_size, channels, height, width) input of the forward above."""
    expected = (len(rois), channels, pooled_height, pooled_width)
    if tuple(grad.shape) != expected:
        raise ValueError(f"grad must have shape {expected}, got {tuple(grad.shape)}")
    _check_args(rois, pooled_height, pooled_width, batch_size)
    grad_pixels = grad.new_zeros(batch_size * height * width, channels)
    if len(rois) and grad_pixels.numel():
        plan = _sampling_plan(
            rois, spatial_scale, pooled_height, pooled_width, sampling_ratio, height, width, channels
        )
        for ids, index, weight in plan:
            grad_bins = grad[ids].flatten(2).transpose(1, 2)  # (k, bins, C)
            contrib = weight.to(grad.dtype)[..., None] * grad_bins[:, :, None, :]
            grad_pixels.index_add_(0, index.flatten(), contrib.reshape(-1, channels))
    return grad_pixels.view(batch_size, height, width, channels).permute(0, 3, 1, 2).contiguous()
