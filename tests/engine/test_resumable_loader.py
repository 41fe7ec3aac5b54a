"""ResumableTrainLoader: the batch sequence is a function of (seed, position) alone: resumed from any state, with
any NUM_WORKERS, it continues exactly; it matches Detectron2's sampler stream; bad samples are named or skipped."""
import random

import numpy as np
import pytest
import torch

import seg_d2  # noqa: F401
from detectron2.data.samplers import TrainingSampler

from seg_d2.data.dataset_mappers.skip_bad_samples import SampleError
from seg_d2.data.samplers import ResumableTrainLoader

SIZES = [(40, 30), (30, 40), (50, 50), (60, 20), (20, 60), (33, 34), (35, 34)]  # (width, height): both buckets
RECORDS = [{"file_name": f"img{i}.jpg", "image_id": 100 + i, "width": w, "height": h}
           for i, (w, h) in enumerate(SIZES * 2)]


def augmenting_mapper(record):
    """Stands for an augmenting mapper: draws from every global RNG, as Detectron2's transforms do."""
    return {**record, "draws": (random.random(), float(np.random.rand()), float(torch.rand(())))}


class OwnGeneratorMapper:
    """A mapper with its own generator (as albumentations' Compose), reseeded per sample by the loader."""

    def __init__(self):
        self.rng = np.random.default_rng()

    def set_random_seed(self, seed):
        self.rng = np.random.default_rng(seed)

    def __call__(self, record):
        return {**record, "draws": (float(self.rng.random()),)}


def failing_on(image_ids, mapper=augmenting_mapper):
    def mapper_with_bad_files(record):
        if record["image_id"] in image_ids:
            raise OSError("image file is truncated (7 bytes not processed)")
        return mapper(record)
    return mapper_with_bad_files


def make_loader(mapper=augmenting_mapper, *, batch_size=3, workers=0, grouping=True, skip=False, seed=7):
    return ResumableTrainLoader(RECORDS, mapper=mapper, sampler=lambda seed: TrainingSampler(len(RECORDS), seed=seed),
                                total_batch_size=batch_size, seed=seed, aspect_ratio_grouping=grouping,
                                num_workers=workers, skip_bad_samples=skip)


def take(loader, n):
    batches = iter(loader)
    return [[(d["image_id"], d["draws"]) for d in next(batches)] for _ in range(n)]


@pytest.fixture(scope="module")
def reference():
    return take(make_loader(), 12)


@pytest.mark.parametrize("stop, workers", [(1, 0), (4, 2), (7, 0), (10, 2)])
def test_resumed_loader_continues_exactly(reference, stop, workers):
    first = make_loader()
    assert take(first, stop) == reference[:stop]
    state = first.state_dict()
    resumed = make_loader(workers=workers, seed=12345)  # the seed comes from the state
    resumed.load_state_dict(state)
    assert take(resumed, 12 - stop) == reference[stop:]


def test_state_holds_samples_waiting_in_a_bucket(reference):
    waiting = []
    for stop in range(1, 12):
        loader = make_loader()
        take(loader, stop)
        waiting.append(loader.state_dict()["waiting_positions"])
    assert any(waiting)  # the resume test above replays buckets that hold samples, not only a position


def test_batches_do_not_depend_on_worker_count(reference):
    assert take(make_loader(workers=2), 12) == reference
    own = take(make_loader(OwnGeneratorMapper()), 6)
    assert take(make_loader(OwnGeneratorMapper(), workers=2), 6) == own
    assert len({d for batch in own for _, d in batch}) == 18  # reseeded per sample, not a repeated draw


def test_without_grouping_batches_are_detectron2_sampler_stream_in_order():
    indices = [d[0] - 100 for batch in take(make_loader(grouping=False, batch_size=4), 6) for d in batch]
    stream = iter(TrainingSampler(len(RECORDS), seed=7))
    assert indices == [next(stream) for _ in range(24)]


@pytest.mark.parametrize("workers", [0, 2])
def test_iterating_leaves_global_rngs_as_they_were(workers):
    states = random.getstate(), np.random.get_state()[1].copy(), torch.get_rng_state()
    take(make_loader(workers=workers), 5)
    assert random.getstate() == states[0]
    assert (np.random.get_state()[1] == states[1]).all() and torch.equal(torch.get_rng_state(), states[2])


@pytest.mark.parametrize("workers", [0, 2])
def test_mapper_error_names_the_file_and_image_id(workers):
    with pytest.raises(SampleError, match=r"img3\.jpg \(image_id 103\): OSError: image file is truncated"):
        take(make_loader(failing_on({103}), workers=workers), 12)


def test_bad_samples_are_skipped_deterministically_counted_and_resumable():
    mapper = failing_on({103, 108})
    reference = take(make_loader(mapper, skip=True), 10)
    assert all(len(batch) == 3 for batch in reference)  # the stream's next samples fill the batch
    assert not {image_id for batch in reference for image_id, _ in batch} & {103, 108}
    first = make_loader(mapper, skip=True)
    take(first, 4)
    resumed = make_loader(mapper, skip=True, workers=2)
    resumed.load_state_dict(first.state_dict())
    assert take(resumed, 6) == reference[4:]
    skipped = resumed.state_dict()["skipped"]
    assert [(s["index"], s["file_name"], s["image_id"]) for s in skipped] == [(3, "img3.jpg", 103), (8, "img8.jpg", 108)]
    stream = iter(TrainingSampler(len(RECORDS), seed=7))
    taken = [next(stream) for _ in range(resumed.state_dict()["next_position"])]
    assert [s["count"] for s in skipped] == [taken.count(3), taken.count(8)] and "truncated" in skipped[0]["reason"]


def test_a_mapper_that_fails_on_everything_stops_the_run():
    with pytest.raises(RuntimeError, match="14 training samples in a row were skipped"):
        take(make_loader(failing_on({r["image_id"] for r in RECORDS}), skip=True), 1)


def test_changed_stream_is_reported_on_resume(caplog):
    first = make_loader()
    take(first, 2)
    other = make_loader(batch_size=2)
    other.load_state_dict(first.state_dict())
    assert "batch_size_per_process: 3 -> 2" in caplog.text
