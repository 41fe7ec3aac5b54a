"""A truncated JPEG mid-run: without DATALOADER.SKIP_BAD_SAMPLES training stops with an error naming the file and
image id; with it the sample is skipped, and the end of training lists it (log, metrics, skipped_samples.json)."""
import json
import logging
import shutil
from pathlib import Path

import pytest
from PIL import Image

import seg_d2  # noqa: F401
from detectron2.data import DatasetCatalog, MetadataCatalog

from seg_d2.data.dataset_mappers.skip_bad_samples import SampleError
from seg_d2.engine import Trainer, setup_cfg

CONFIG = Path(__file__).resolve().parents[2] / "configs" / "builtin" / "semantic_unet.yaml"
SOURCE = "seg_d2_shapes_train_sem_seg"


@pytest.fixture(scope="module")
def dataset_with_truncated_jpeg(tmp_path_factory):
    """Six built-in training images copied as JPEGs, the third cut to half its bytes."""
    folder = tmp_path_factory.mktemp("bad_jpeg")
    records = []
    for i, record in enumerate(DatasetCatalog.get(SOURCE)[:6]):
        image = folder / f"image{i}.jpg"
        Image.open(record["file_name"]).convert("RGB").save(image, quality=90)
        records.append({**record, "file_name": str(image), "image_id": 1000 + i})
    truncated = Path(records[2]["file_name"])
    truncated.write_bytes(truncated.read_bytes()[: truncated.stat().st_size // 2])
    name = "test_skip_bad_samples_train"
    DatasetCatalog.register(name, lambda: [dict(r) for r in records])
    MetadataCatalog.get(name).set(**{k: v for k, v in MetadataCatalog.get(SOURCE).as_dict().items() if k != "name"})
    yield name, truncated
    DatasetCatalog.remove(name)
    MetadataCatalog.remove(name)
    shutil.rmtree(folder)


def _train(dataset, out, *opts):
    cfg = setup_cfg(str(CONFIG), ["DATASETS.TRAIN", f"('{dataset}',)", "DATASETS.TEST", "()", "OUTPUT_DIR", str(out),
                                  "MODEL.UNET.DEPTH", "2", "MODEL.UNET.BASE_CHANNELS", "8", "SOLVER.IMS_PER_BATCH",
                                  "2", "SOLVER.MAX_ITER", "6", "SOLVER.CHECKPOINT_PERIOD", "100", *opts])
    trainer = Trainer(cfg)
    trainer.resume_or_load(resume=False)
    trainer.train()


def test_a_truncated_jpeg_stops_training_with_its_file_and_image_id(dataset_with_truncated_jpeg, tmp_path):
    dataset, truncated = dataset_with_truncated_jpeg
    with pytest.raises(SampleError, match=rf"{truncated} \(image_id 1002\): .*truncated"):
        _train(dataset, tmp_path)


def test_skip_bad_samples_skips_and_lists_the_truncated_jpeg(dataset_with_truncated_jpeg, tmp_path, caplog):
    dataset, truncated = dataset_with_truncated_jpeg
    logging.getLogger("seg_d2").addHandler(caplog.handler)  # Detectron2's setup_logger stops propagation
    try:
        _train(dataset, tmp_path, "DATALOADER.SKIP_BAD_SAMPLES", "True")
    finally:
        logging.getLogger("seg_d2").removeHandler(caplog.handler)
    listed = json.loads((tmp_path / "skipped_samples.json").read_text())
    assert [(s["file_name"], s["image_id"], s["index"]) for s in listed] == [(str(truncated), 1002, 2)]
    # 6 iterations x 2 images from a 6-image stream, plus what the batch after a skip takes: seen twice or more
    assert listed[0]["count"] >= 2 and "truncated" in listed[0]["reason"]
    assert f"1 training samples were skipped ({listed[0]['count']} times" in caplog.text
    assert f"{truncated} (image_id 1002), {listed[0]['count']}x:" in caplog.text
    last = json.loads((tmp_path / "metrics.json").read_text().splitlines()[-1])
    assert last["skipped_samples"] == 1
    assert (tmp_path / "model_final.pth").is_file()
