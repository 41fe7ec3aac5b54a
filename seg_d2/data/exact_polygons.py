"""Binary masks as COCO polygons that rasterise back to exactly the same pixels.

pycocotools' polygon rasteriser (``frPyObjects`` + ``decode``, also behind Detectron2's
``polygons_to_bitmask`` and COCO evaluation) fills, in each pixel column, the pixels whose centre lies
between boundary crossings, toggling at every crossing of the column's centre line. So a polygon whose edges
run along pixel borders (vertices at integer pixel corners) covers exactly the pixels it encloses, and
two opposite traversals of one segment cancel. Hence the encoding, one polygon per 4-connected component:

- its outer boundary traced along pixel borders (vertices only where the boundary turns);
- each hole's boundary, traced the other way round, appended after a "bridge": a segment from the
  outer boundary's first vertex to the hole's and, after the hole, back. The bridge's two traversals
  cancel, so the polygon stays exact although COCO polygons cannot hold holes.

Diagonal neighbours are separate components (4-connectivity), so outer boundaries never cross. A polygon
with a hole touches itself along its bridge: exact for pycocotools and Detectron2's rasterisers and
areas, but not a valid shapely polygon (Detectron2's crop augmentation keeps only its outer boundary).
"""
from typing import Dict, List, Tuple

import numpy as np
from scipy import ndimage

__all__ = ["mask_to_polygons"]

_Vertex = Tuple[int, int]
# 4-connectivity: pixels sharing an edge belong together, diagonal ones do not.
_FOUR_CONNECTED = np.array([[0, 1, 0], [1, 1, 1], [0, 1, 0]])


def _boundary_edges(mask: np.ndarray) -> Dict[_Vertex, List[_Vertex]]:
    """Unit pixel-border edges between foreground and background, directed with the foreground on the
    right (x right, y down): {start corner (x, y): [end corners]}. A corner where two foreground pixels
    touch diagonally starts two edges."""
    padded = np.pad(mask, 1)
    # horizontal borders at y between rows y-1 and y; vertical ones at x between columns x-1 and x
    above, below = padded[:-1, 1:-1], padded[1:, 1:-1]
    left, right = padded[1:-1, :-1], padded[1:-1, 1:]
    edges: Dict[_Vertex, List[_Vertex]] = {}
    for ys, xs, start, end in (
        (*np.nonzero(below & ~above), (0, 0), (1, 0)),  # top border of foreground: rightwards
        (*np.nonzero(above & ~below), (1, 0), (0, 0)),  # bottom border: leftwards
        (*np.nonzero(left & ~right), (0, 0), (0, 1)),  # right border: downwards
        (*np.nonzero(right & ~left), (0, 1), (0, 0)),  # left border: upwards
    ):
        for y, x in zip(ys.tolist(), xs.tolist()):
            edges.setdefault((x + start[0], y + start[1]), []).append((x + end[0], y + end[1]))
    return edges


def _next_corner(edges, previous: _Vertex, corner: _Vertex) -> _Vertex:
    """Where the boundary arriving at ``corner`` from ``previous`` goes on. Where two foreground pixels
    meet diagonally (two ways on), it turns right, towards the foreground: it hugs one pixel, so
    diagonal pixels stay apart."""
    ends = edges[corner]
    if len(ends) == 1:
        return ends[0]
    dx, dy = corner[0] - previous[0], corner[1] - previous[1]
    return (corner[0] - dy, corner[1] + dx)  # right of (dx, dy), with y pointing down


def _trace_loops(edges) -> List[List[_Vertex]]:
    """Closed boundary loops, each as the corners where its direction changes."""
    all_edges = sorted((start, end) for start, ends in edges.items() for end in ends)  # a fixed order
    unused = set(all_edges)
    loops = []
    for first in all_edges:
        if first not in unused:
            continue
        edge, corners = first, []
        while True:
            unused.remove(edge)
            corners.append(edge[0])
            edge = (edge[1], _next_corner(edges, *edge))
            if edge == first:
                break
        loops.append(_turning_corners(corners))
    return loops


def _turning_corners(corners: List[_Vertex]) -> List[_Vertex]:
    """Drop the corners where the boundary goes straight on."""
    points = np.array(corners)
    incoming = points - np.roll(points, 1, axis=0)
    outgoing = np.roll(points, -1, axis=0) - points
    turns = (incoming != outgoing).any(axis=1)
    return [tuple(p) for p in points[turns].tolist()]


def _signed_area(loop: List[_Vertex]) -> float:
    x, y = np.array(loop, dtype=np.float64).T
    return 0.5 * float(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1)))


def _component_of(loop: List[_Vertex], labels: np.ndarray) -> int:
    """Label of the foreground pixel on the right of the loop's first edge."""
    (x0, y0), (x1, y1) = loop[0], loop[1]
    dx, dy = np.sign(x1 - x0), np.sign(y1 - y0)
    # the pixel right of a unit step (dx, dy) from (x0, y0): its top-left corner
    px = x0 + min(dx, 0) + min(-dy, 0)
    py = y0 + min(dy, 0) + min(dx, 0)
    return int(labels[py, px])


def _bridged(outer: List[_Vertex], holes: List[List[_Vertex]], origin: _Vertex) -> List[float]:
    """One flat COCO polygon, shifted by ``origin``: ``outer``, then each hole reached from and left back
    to outer[0]."""
    ring = list(outer)
    for hole in holes:
        ring += [outer[0], *hole, hole[0]]
    return (np.array(ring, dtype=np.float64) + origin).ravel().tolist()


def mask_to_polygons(mask: np.ndarray) -> List[List[float]]:
    """COCO polygons ([[x0, y0, x1, y1, ...], ...], one per 4-connected component) of the binary (H, W)
    ``mask`` whose pycocotools rasterisation is exactly ``mask``; [] for an empty mask."""
    mask = np.asarray(mask).astype(bool)
    if mask.ndim != 2:
        raise ValueError(f"mask_to_polygons needs an (H, W) mask, got shape {mask.shape}")
    rows, cols = np.nonzero(mask.any(axis=1))[0], np.nonzero(mask.any(axis=0))[0]
    if not len(rows):
        return []
    # traced in the mask's bounding box, then shifted back
    y0, x0 = int(rows[0]), int(cols[0])
    crop = mask[y0 : rows[-1] + 1, x0 : cols[-1] + 1]
    labels, _ = ndimage.label(crop, structure=_FOUR_CONNECTED)
    outer, holes = {}, {}
    for loop in _trace_loops(_boundary_edges(crop)):
        component = _component_of(loop, labels)
        if _signed_area(loop) > 0:  # foreground on the right, y down: outer boundaries turn clockwise
            outer[component] = loop
        else:
            holes.setdefault(component, []).append(loop)
    return [_bridged(outer[c], holes.get(c, []), (x0, y0)) for c in sorted(outer)]
