"""The files a prediction run writes, in the formats ``tools/evaluate.py`` and COCO tools read:

- ``sem_seg/<name>.png``: semantic labels (contiguous class ids; 16-bit beyond 256 classes);
- ``panoptic/<name>.png`` (COCO panoptic RGB ids) + ``panoptic.json`` (images, annotations, categories);
- ``instances_results.json``: COCO results (RLE masks, XYWH boxes, scores) for the instances.

Category ids are the dataset's (MetadataCatalog: ``thing_dataset_id_to_contiguous_id`` /
``stuff_dataset_id_to_contiguous_id``) when the metadata has them, else the contiguous ids.
"""
import json
import os

import cv2
import numpy as np

from detectron2.data import Metadata, MetadataCatalog

__all__ = ["PredictionWriter", "prediction_metadata", "write_panoptic_png"]


def prediction_metadata(cfg):
    """Metadata of cfg.DATASETS.TEST[0] (class names, colours, id maps), with numbered class names where
    it has none (a model predicted on images of no registered dataset)."""
    name = cfg.DATASETS.TEST[0] if cfg.DATASETS.TEST else "__unused"
    values = {k: v for k, v in MetadataCatalog.get(name).as_dict().items() if k != "name"}
    values.setdefault("thing_classes", [str(i) for i in range(cfg.MODEL.ROI_HEADS.NUM_CLASSES)])
    values.setdefault("stuff_classes", [str(i) for i in range(cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES)])
    return Metadata(name=name, **values)


def write_panoptic_png(path, ids):
    """A COCO panoptic PNG of (H, W) segment ids below 2**24 (id = R + 256 G + 256**2 B). The bytes of a
    little-endian int32 are exactly those channels: one (H, W, 3) copy in OpenCV's BGR order, encoded row
    by row (PIL would first widen it to 4 bytes a pixel)."""
    if ids.size and int(ids.max()) >= 1 << 24:
        raise ValueError(f"segment id {int(ids.max())} does not fit a COCO panoptic PNG (< 2**24)")
    bgr = np.ascontiguousarray(ids.astype("<i4", copy=False).view(np.uint8).reshape(*ids.shape, 4)[..., 2::-1])
    if not cv2.imwrite(path, bgr):
        raise OSError(f"could not write {path}")


def _to_dataset_ids(mapping):
    """contiguous id -> dataset id (identity where the metadata has no map)."""
    inverse = {v: k for k, v in (mapping or {}).items()}
    return lambda contiguous: int(inverse.get(int(contiguous), contiguous))


class PredictionWriter:
    """Writes each image's label PNGs as it comes, and the JSON files at :meth:`close`."""

    def __init__(self, output_dir, metadata):
        self.output_dir = output_dir
        self.metadata = metadata
        self._thing_id = _to_dataset_ids(metadata.get("thing_dataset_id_to_contiguous_id", None))
        self._stuff_id = _to_dataset_ids(metadata.get("stuff_dataset_id_to_contiguous_id", None))
        self._images, self._panoptic = [], []
        self._results = None  # COCO results, once a prediction has instances
        os.makedirs(output_dir, exist_ok=True)

    def _path(self, *parts):
        path = os.path.join(self.output_dir, *parts)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        return path

    def add(self, prediction, name, file_name, image_id):
        """Write the outputs of one image; ``name`` is the output stem, ``image_id`` goes into the JSONs."""
        self._images.append({"id": image_id, "file_name": file_name, "height": prediction.height,
                             "width": prediction.width})
        if prediction.panoptic_seg is not None:
            self._add_panoptic(prediction, name, image_id)
        elif prediction.sem_seg is not None:
            labels = prediction.sem_seg
            labels = labels.astype(np.uint16) if labels.dtype != np.uint8 else labels
            path = self._path("sem_seg", name + ".png")
            if not cv2.imwrite(path, labels):
                raise OSError(f"could not write {path}")
        if prediction.instances is not None:
            self._add_instances(prediction, image_id)

    def _add_instances(self, prediction, image_id):
        instances = prediction.instances
        if self._results is None:
            self._results = []
        rles = instances.to_rles(prediction.height, prediction.width)
        for box, score, category, rle in zip(instances.boxes, instances.scores, instances.classes, rles):
            x0, y0, x1, y1 = (float(v) for v in box)
            self._results.append({"image_id": image_id, "category_id": self._thing_id(category),
                                  "bbox": [x0, y0, x1 - x0, y1 - y0], "score": float(score), "segmentation": rle})

    def _add_panoptic(self, prediction, name, image_id):
        write_panoptic_png(self._path("panoptic", name + ".png"), prediction.panoptic_seg)
        segments = [{"id": s["id"], "category_id": (self._thing_id if s["isthing"] else self._stuff_id)(s["category_id"]),
                     "iscrowd": 0, "isthing": bool(s["isthing"]), "area": s["area"]} for s in prediction.segments_info]
        self._panoptic.append({"image_id": image_id, "file_name": name + ".png", "segments_info": segments})

    def _categories(self):
        """COCO panoptic categories from the metadata's class names and id maps (Panoptic FPN's separated
        form: stuff label 0 is "things", not a category)."""
        categories = []
        for names_key, map_key, isthing in (("thing_classes", "thing_dataset_id_to_contiguous_id", 1),
                                            ("stuff_classes", "stuff_dataset_id_to_contiguous_id", 0)):
            names = self.metadata.get(names_key, [])
            mapping = self.metadata.get(map_key, None) or {i: i for i in range(len(names))}
            separated = not isthing and mapping.get(0, None) == 0 and len(mapping) > 1
            categories += [{"id": int(dataset_id), "name": names[contiguous], "isthing": isthing}
                           for dataset_id, contiguous in sorted(mapping.items(), key=lambda kv: kv[1])
                           if not (separated and contiguous == 0)]
        return categories

    def close(self):
        """Write the JSON files; returns their paths."""
        written = []
        if self._panoptic:
            written.append(self._dump("panoptic.json", {"images": self._images, "annotations": self._panoptic,
                                                        "categories": self._categories()}))
        if self._results is not None:
            written.append(self._dump("instances_results.json", self._results))
        return written

    def _dump(self, file_name, data):
        path = self._path(file_name)
        with open(path + ".tmp", "w") as f:
            json.dump(data, f)
        os.replace(path + ".tmp", path)
        return path
