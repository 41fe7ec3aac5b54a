"""A classical, training-free instance segmenter: Otsu threshold + distance-transform watershed.

:class:`WatershedSegmenter` has the call contract of a Detectron2 model in eval mode (a list of dataset
dicts with an "image" CHW tensor in, a list of ``{"instances": Instances}`` out), so
``detectron2.evaluation.inference_on_dataset`` and seg_d2's evaluators score it like any trained model.
"""
import cv2
import numpy as np
import scipy.ndimage as ndi
import torch
from skimage.feature import peak_local_max
from skimage.filters import threshold_otsu
from skimage.measure import regionprops
from skimage.morphology import disk
from skimage.segmentation import watershed

from detectron2.structures import BitMasks, Boxes, Instances

__all__ = ["WatershedSegmenter"]


class WatershedSegmenter:
    """Splits the Otsu foreground into instances with a watershed on its distance transform.

    Steps: grayscale (channel mean) -> Otsu threshold -> binary opening (removes specks and thin bridges
    between touching objects) -> Euclidean distance to the background -> one marker per local maximum of
    the distance map at least ``min_distance`` pixels apart (one per object centre) -> watershed of the
    negated distance map within the foreground -> drop regions smaller than ``min_area`` pixels.

    Each instance's score is its solidity (area / convex-hull area): a convex blob is likely one object,
    a concave one likely an under-split cluster, so AP ranks the trustworthy ones first.
    """

    def __init__(self, *, bright_foreground=True, min_distance=5, min_area=10, opening_radius=1, class_id=0):
        """
        Args:
            bright_foreground: objects are brighter than the background (fluorescence); False: darker.
            min_distance: minimum distance in pixels between two object centres (about the smallest radius).
            min_area: instances with fewer pixels are dropped.
            opening_radius: radius of the disk of the binary opening; 0 skips it.
            class_id: the ``pred_classes`` value of every instance (contiguous dataset class id).
        """
        if min_distance < 1:
            raise ValueError(f"min_distance must be >= 1, got {min_distance}")
        if min_area < 0 or opening_radius < 0 or class_id < 0:
            raise ValueError(
                f"min_area, opening_radius and class_id must be >= 0, got {min_area}, {opening_radius}, {class_id}"
            )
        self.bright_foreground = bright_foreground
        self.min_distance = int(min_distance)
        self.min_area = int(min_area)
        self.opening_radius = int(opening_radius)
        self.class_id = int(class_id)

    def foreground(self, gray):
        """Boolean foreground of a 2D float image (all False for a constant image: Otsu is undefined)."""
        if gray.min() == gray.max():
            return np.zeros(gray.shape, bool)
        fg = gray > threshold_otsu(gray)
        if not self.bright_foreground:
            fg = ~fg
        if self.opening_radius:
            fg = ndi.binary_opening(fg, structure=disk(self.opening_radius))
        return fg

    def label_map(self, gray):
        """int32 label map (0 = background, 1..N = instances) of a 2D image."""
        gray = np.asarray(gray, dtype=np.float64)
        if gray.ndim != 2:
            raise ValueError(f"expected a 2D grayscale image, got shape {gray.shape}")
        fg = self.foreground(gray)
        dist = ndi.distance_transform_edt(fg)
        components, _ = ndi.label(fg)
        peaks = peak_local_max(dist, min_distance=self.min_distance, labels=components, exclude_border=False)
        markers = np.zeros(gray.shape, np.int32)
        markers[tuple(peaks.T)] = np.arange(1, len(peaks) + 1)
        # A component too thin to have a peak still is an object: give it its own marker.
        unmarked = np.setdiff1d(np.unique(components[fg]), components[markers > 0])
        for i, comp in enumerate(unmarked, start=len(peaks) + 1):
            markers[components == comp] = i
        labels = watershed(-dist, markers, mask=fg).astype(np.int32)
        areas = np.bincount(labels.ravel())
        labels[areas[labels] < self.min_area] = 0
        return labels

    def instances(self, labels, image_size):
        """Detectron2 Instances of a label map (any ids), resized (nearest) to ``image_size`` (h, w)."""
        h, w = image_size
        if labels.shape != (h, w):
            labels = cv2.resize(labels, (w, h), interpolation=cv2.INTER_NEAREST)
        props = [p for p in regionprops(labels) if p.area > 0]
        masks = torch.from_numpy(np.stack([labels == p.label for p in props]) if props else np.zeros((0, h, w), bool))
        out = Instances((h, w))
        out.pred_masks = masks
        out.pred_boxes = BitMasks(masks).get_bounding_boxes() if props else Boxes(torch.zeros(0, 4))
        out.scores = torch.tensor([float(p.solidity) for p in props], dtype=torch.float32)
        out.pred_classes = torch.full((len(props),), self.class_id, dtype=torch.int64)
        return out

    def __call__(self, batched_inputs):
        outputs = []
        for inputs in batched_inputs:
            image = inputs["image"]
            if image.ndim != 3:
                raise ValueError(f"'image' must be a CHW tensor, got shape {tuple(image.shape)}")
            gray = image.to(torch.float64).mean(dim=0).numpy()
            size = (inputs.get("height", image.shape[1]), inputs.get("width", image.shape[2]))
            outputs.append({"instances": self.instances(self.label_map(gray), size)})
        return outputs
