"""Tiles of large images: the window grid shared by tiled training data and sliding-window inference."""

__all__ = ["tile_windows"]


def _starts(length, tile, stride):
    """Window starts along one axis: every ``stride``, the last window flush with the far border."""
    if length <= tile:
        return [0]
    starts = list(range(0, length - tile, stride))
    return starts + [length - tile]


def tile_windows(height, width, tile_size, overlap):
    """(x0, y0, x1, y1) windows of at most ``tile_size`` pixels a side, neighbours sharing at least
    ``overlap`` pixels, covering the whole image; images smaller than a tile are one window."""
    if tile_size <= 0 or not 0 <= overlap < tile_size:
        raise ValueError(f"need tile_size > 0 and 0 <= overlap < tile_size, got {tile_size}, {overlap}")
    stride = tile_size - overlap
    return [
        (x0, y0, min(x0 + tile_size, width), min(y0 + tile_size, height))
        for y0 in _starts(height, tile_size, stride)
        for x0 in _starts(width, tile_size, stride)
    ]
