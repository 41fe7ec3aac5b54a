"""How overlapping tiles share a pixel: each window weighs its pixels by their distance to its inner
borders, semantic logits are blended with those weights, and seam-cut instances take each pixel from
the tile that saw it with most context (:mod:`.instance_merge`).

A window border on the image's edge is not a seam (no other window sees past it), so it does not lower
the weight. In the band two windows share, the weights cross-fade linearly (a pyramid window), the
usual choice for sliding-window segmentation, which reduces the errors a model makes near a tile's edge
where its receptive field is cut.
"""
import numpy as np

__all__ = ["LogitBlender", "axis_weights", "window_weights"]


def axis_weights(start, end, length):
    """Weights of pixels ``start..end-1`` of a window along an image axis of ``length`` pixels: the
    distance (1 at the border pixel) to the nearest window border inside the image, at most the window's size."""
    size = end - start
    position = np.arange(size, dtype=np.float32)
    near_start = position + 1 if start > 0 else np.full(size, size, np.float32)
    near_end = size - position if end < length else np.full(size, size, np.float32)
    return np.minimum(near_start, near_end)


def window_weights(window, height, width):
    """(h, w) float32 weights of a window (x0, y0, x1, y1) of an image of ``height`` x ``width``."""
    x0, y0, x1, y1 = window
    return np.outer(axis_weights(y0, y1, height), axis_weights(x0, x1, width))


class LogitBlender:
    """Per-pixel labels from overlapping windows' logits: the argmax of their weighted sum.

    The image is cut by every window edge into cells, each covered by a fixed set of windows; a cell's
    sum is kept only until its last window has been added, then argmax'ed into ``labels``. With windows
    added row by row, the sums alive are one strip of overlap across the image plus a window, so memory
    does not grow with the image's height. (Dividing by the summed weights would not change the argmax.)
    """

    def __init__(self, windows, height, width, num_classes):
        self._xs = sorted({x for w in windows for x in (w[0], w[2])})
        self._ys = sorted({y for w in windows for y in (w[1], w[3])})
        self._row_of = {y: i for i, y in enumerate(self._ys)}
        self._col_of = {x: i for i, x in enumerate(self._xs)}
        self._height, self._width = height, width
        self._pending = np.zeros((len(self._ys) - 1, len(self._xs) - 1), dtype=np.int64)
        for window in windows:
            self._pending[self._cell_range(window)] += 1
        if self._xs[0] != 0 or self._ys[0] != 0 or self._xs[-1] != width or self._ys[-1] != height or \
                not self._pending.all():
            raise ValueError(f"the windows do not cover the {width}x{height} image")
        self._sums = {}
        self.labels = np.zeros((height, width), dtype=np.uint8 if num_classes <= 256 else np.int32)

    def _cell_range(self, window):
        x0, y0, x1, y1 = window
        row, col = self._row_of, self._col_of
        return slice(row[y0], row[y1]), slice(col[x0], col[x1])

    def add(self, window, logits):
        """Add a window's (C, h, w) logits (numpy)."""
        x0, y0, x1, y1 = window
        if logits.shape[1:] != (y1 - y0, x1 - x0):
            raise ValueError(f"logits of shape {logits.shape} for window {window}")
        weights = None
        rows, cols = self._cell_range(window)
        for iy in range(rows.start, rows.stop):
            for ix in range(cols.start, cols.stop):
                cy0, cy1, cx0, cx1 = self._ys[iy], self._ys[iy + 1], self._xs[ix], self._xs[ix + 1]
                part = logits[:, cy0 - y0:cy1 - y0, cx0 - x0:cx1 - x0]
                self._pending[iy, ix] -= 1
                if self._pending[iy, ix] == 0 and (iy, ix) not in self._sums:  # this window alone covers it
                    self.labels[cy0:cy1, cx0:cx1] = part.argmax(axis=0)
                    continue
                if weights is None:
                    weights = window_weights(window, self._height, self._width)
                total = part * weights[cy0 - y0:cy1 - y0, cx0 - x0:cx1 - x0]
                if (iy, ix) in self._sums:
                    total += self._sums.pop((iy, ix))
                if self._pending[iy, ix] == 0:
                    self.labels[cy0:cy1, cx0:cx1] = total.argmax(axis=0)
                else:
                    self._sums[(iy, ix)] = total

    def finish(self):
        """The (H, W) labels, once every window was added."""
        if self._pending.any():
            raise RuntimeError(f"{int((self._pending > 0).sum())} cells still wait for windows")
        return self.labels
