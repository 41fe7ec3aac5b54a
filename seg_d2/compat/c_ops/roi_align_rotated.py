"""``roi_align_rotated_forward`` / ``roi_align_rotated_backward`` of Detectron2 v0.6's ``_C``.

Each output bin averages a grid of bilinear samples taken on the ROI's rotated frame. The C++ rules
are kept: coordinates are continuous with pixel centers at +0.5 (the ROI is shifted by -0.5 pixel, i.e.
ROIAlign's aligned=True), a ROI point (xx, yy) relative to the ROI center maps to the feature map as
y = yy cos(a) - xx sin(a) + cy, x = yy sin(a) + xx cos(a) + cx, samples with y < -1, y > H, x < -1 or
x > W are 0, others are clamped into the map.

The values are the compiled CPU op's, bit for bit: every coordinate and weight is computed in the
input's dtype with the C++'s expressions, samples are summed in its order (row of samples by row,
corners low-low, low-high, high-low, high-high), and backward adds each sample's share to the input
gradient in its loop order (ROI, channel, bin, sample, corner).
"""
import math

import numpy as np
import torch

__all__ = ["roi_align_rotated_forward", "roi_align_rotated_backward"]

_MAX_GATHERED = 1 << 23  # gathered values (ROIs x bins x samples x corners x channels) held at once


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


class _Frames:
    """Each ROI's sampling frame, with the C++'s expressions in the rois' dtype."""

    def __init__(self, rois, spatial_scale, pooled_h, pooled_w, sampling_ratio):
        scale = float(np.float32(spatial_scale))  # the C++ API takes a float (then casts it to T)
        self.batch = rois[:, 0].long()
        self.cx, self.cy = rois[:, 1] * scale - 0.5, rois[:, 2] * scale - 0.5
        roi_w, roi_h = rois[:, 3] * scale, rois[:, 4] * scale
        theta = (rois[:, 5].double() * math.pi / 180.0).to(rois.dtype)
        # cos of the T angle in double (libm, as numpy's), then T again, as `T cos_theta = cos(theta)`
        theta = theta.double().cpu().numpy()
        self.cos = torch.from_numpy(np.cos(theta)).to(rois.device, rois.dtype)
        self.sin = torch.from_numpy(np.sin(theta)).to(rois.device, rois.dtype)
        self.bin_h, self.bin_w = roi_h / pooled_h, roi_w / pooled_w
        self.start_h, self.start_w = -roi_h / 2, -roi_w / 2
        self.grid_h = self._grid(roi_h, pooled_h, sampling_ratio)
        self.grid_w = self._grid(roi_w, pooled_w, sampling_ratio)
        self.pooled = (pooled_h, pooled_w)

    @staticmethod
    def _grid(length, pooled, sampling_ratio):
        if sampling_ratio > 0:
            return torch.full_like(length, sampling_ratio, dtype=torch.long)
        return torch.ceil(length / pooled).long()

    def chunks(self, per_sample):
        """Consecutive ROIs, in ROI order, each chunk holding at most _MAX_GATHERED values (per_sample per
        ROI, bin and sample), split into groups of one grid size: [(ids, grid_h, grid_w), ...]."""
        samples = (self.grid_h * self.grid_w).clamp(min=1) * (self.pooled[0] * self.pooled[1] * per_sample)
        keys = self.grid_h * (int(self.grid_w.max()) + 1) + self.grid_w
        first, total = 0, 0
        for end, size in enumerate(samples.tolist(), 1):
            total += size
            if total >= _MAX_GATHERED or end == len(samples):
                chunk = torch.arange(first, end, device=keys.device)
                groups = [chunk[keys[chunk] == key] for key in keys[chunk].unique().tolist()]
                yield [(ids, int(self.grid_h[ids[0]]), int(self.grid_w[ids[0]])) for ids in groups]
                first, total = end, 0

    def corners(self, ids, gh, gw, height, width):
        """Pixel indices (into the N*H*W pixels) and weights of each sample's 4 corners, and which samples
        lie on the map: (k, bins, samples, 4), (k, bins, samples, 4), (k, bins, samples)."""
        dtype, device = self.cx.dtype, self.cx.device
        ph, pw = (torch.arange(p, device=device).to(dtype) for p in self.pooled)
        iy = (torch.arange(gh, device=device) + 0.5).to(dtype)
        ix = (torch.arange(gw, device=device) + 0.5).to(dtype)
        shape = (-1, 1, 1, 1, 1)  # ROI, ph, pw, iy, ix

        def per_roi(values):
            return values[ids].view(shape)

        start_h, bin_h, start_w, bin_w = (per_roi(v) for v in (self.start_h, self.bin_h, self.start_w, self.bin_w))
        # `roi_start_h + ph * bin_size_h + (iy + .5f) * bin_size_h / roi_bin_grid_h`, likewise for x
        yy = (start_h + ph.view(1, -1, 1, 1, 1) * bin_h) + iy.view(1, 1, 1, -1, 1) * bin_h / float(gh)
        xx = (start_w + pw.view(1, 1, -1, 1, 1) * bin_w) + ix.view(1, 1, 1, 1, -1) * bin_w / float(gw)
        cos, sin = per_roi(self.cos), per_roi(self.sin)
        y = (yy * cos - xx * sin) + per_roi(self.cy)
        x = (yy * sin + xx * cos) + per_roi(self.cx)
        inside = (y >= -1) & (y <= height) & (x >= -1) & (x <= width)
        y_low, y_high, ly = _axis(y.clamp(min=0), height)
        x_low, x_high, lx = _axis(x.clamp(min=0), width)
        hy, hx = 1 - ly, 1 - lx
        base = self.batch[ids].view(shape) * (height * width)
        index = torch.stack([y_low * width + x_low, y_low * width + x_high,
                             y_high * width + x_low, y_high * width + x_high], -1) + base[..., None]
        weight = torch.stack([hy * hx, hy * lx, ly * hx, ly * lx], -1)
        # a sample off the map reads its image's first pixel with weight 0, as the C++
        index = torch.where(inside[..., None], index, base[..., None])
        weight = torch.where(inside[..., None], weight, 0.0)
        flat = (len(ids), self.pooled[0] * self.pooled[1], gh * gw)
        return index.reshape(*flat, 4), weight.reshape(*flat, 4), inside.reshape(flat)


def _axis(coord, size):
    """Lower/upper pixel and the upper one's weight along one axis (C++ clamping at the last pixel)."""
    low = coord.long()
    at_end = low >= size - 1
    low = torch.where(at_end, size - 1, low)
    coord = torch.where(at_end, (size - 1.0), coord)
    return low, torch.where(at_end, low, low + 1), coord - low


def _pool(pixels, index, weight, samples):
    """Each bin's mean over its samples, summed in order: `output_val += w1 * v1 + ... + w4 * v4`."""
    total = pixels.new_zeros(*index.shape[:2], pixels.shape[1])
    for s in range(samples):
        values = pixels[index[:, :, s]]  # (k, bins, 4, C)
        w = weight[:, :, s, :, None]
        total = total + (((w[:, :, 0] * values[:, :, 0] + w[:, :, 1] * values[:, :, 1])
                          + w[:, :, 2] * values[:, :, 2]) + w[:, :, 3] * values[:, :, 3])
    return total / float(max(samples, 1))


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
    frames = _Frames(rois, spatial_scale, pooled_height, pooled_width, sampling_ratio)
    for chunk in frames.chunks(per_sample=4 * channels):
        for ids, gh, gw in chunk:
            index, weight, _ = frames.corners(ids, gh, gw, height, width)
            pooled = _pool(pixels, index, weight, gh * gw)  # (k, bins, C)
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
    if len(rois) == 0 or grad_pixels.numel() == 0:
        return grad_pixels.view(batch_size, height, width, channels).permute(0, 3, 1, 2).contiguous()
    frames = _Frames(rois, spatial_scale, pooled_height, pooled_width, sampling_ratio)
    row_span = pooled_height * pooled_width * int((frames.grid_h * frames.grid_w).max()) * 4  # rows per ROI, at most
    for chunk in frames.chunks(per_sample=4 * channels):
        rows, shares, keys = [], [], []
        for ids, gh, gw in chunk:
            index, weight, inside = frames.corners(ids, gh, gw, height, width)
            # `g * w / count` of each corner; samples off the map add nothing
            grad_bins = grad[ids].flatten(2).transpose(1, 2)[:, :, None, None, :]  # (k, bins, 1, 1, C)
            share = grad_bins * weight[..., None] / float(gh * gw)
            keep = inside[..., None].expand_as(index)
            local = torch.arange(index[0].numel(), device=grad.device).view(index.shape[1:])
            rows.append(index[keep])
            shares.append(share[keep])
            keys.append((ids.view(-1, 1, 1, 1) * row_span + local)[keep])
        # each pixel gets its shares in the C++'s loop order (ROI, bin, sample, corner; channels apart)
        rows, shares = torch.cat(rows), torch.cat(shares)
        if len(chunk) > 1:  # groups of grid sizes interleave in ROI order
            order = torch.cat(keys).argsort()
            rows, shares = rows[order], shares[order]
        grad_pixels.index_add_(0, rows, shares)
    return grad_pixels.view(batch_size, height, width, channels).permute(0, 3, 1, 2).contiguous()
