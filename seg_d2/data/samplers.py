"""A training stream that resumes exactly: batch b is a function of (seed, b), whatever happened before.

Detectron2's training loader cannot resume: its sampler is an infinite seeded stream that starts again from the
beginning, AspectRatioGroupedDataset buffers samples the checkpoint does not hold, and augmentations draw from the
global RNGs of whichever process maps a sample (workers are seeded from a base seed drawn anew each time a
DataLoader iterator is made). :class:`ResumableTrainLoader` yields the same batches from the same pieces:

- the index stream is Detectron2's training sampler (``DATALOADER.SAMPLER_TRAIN``) with an explicit seed;
- the sample at global stream position p is mapped with python, numpy and torch RNGs (and the mapper's own, if it
  has ``set_random_seed(seed)``) seeded from (seed, p): its augmentation is the same in any process or worker;
- batches are formed in the main process, in stream order, per aspect-ratio bucket as AspectRatioGroupedDataset
  does, so they do not depend on ``DATALOADER.NUM_WORKERS`` either;
- :meth:`~ResumableTrainLoader.state_dict` is the next stream position and the positions waiting in the buckets;
  after :meth:`~ResumableTrainLoader.load_state_dict` the waiting samples are mapped again (same seeds, same
  result) and the stream goes on from the next position;
- whatever the loader does in the main process leaves the global RNGs as they were.
"""
import contextlib
import enum
import functools
import itertools
import logging
import random

import numpy as np
import torch
from torch.utils import data as torchdata

from detectron2.config import configurable
from detectron2.data import DatasetFromList, get_detection_dataset_dicts
from detectron2.data.build import trivial_batch_collator
from detectron2.data.samplers import RandomSubsetTrainingSampler, RepeatFactorTrainingSampler, TrainingSampler
from detectron2.utils import comm

from .dataset_mappers import build_mapper
from .dataset_mappers.skip_bad_samples import describe_sample, map_or_skip

__all__ = [
    "ResumableTrainLoader",
    "SeedUse",
    "derive_seed",
    "preserved_rngs",
    "run_seed",
    "seed_global_rngs",
    "training_sampler_factory",
]

logger = logging.getLogger(__name__)


class SeedUse(enum.IntEnum):
    """What a seed derived from the run seed is for: each use gets its own independent streams."""

    SAMPLE = 1  # the mapping (augmentation) of one sample, keyed by its global stream position
    STEP = 2  # one training iteration of one process (seg_d2.engine.hooks.ReseedEachIteration)
    SUBSET = 3  # the subset RandomSubsetTrainingSampler draws


def derive_seed(seed, use, *keys):
    """A 32-bit seed for one use of the run seed (numpy's SeedSequence hashes them into independent streams)."""
    return int(np.random.SeedSequence(seed, spawn_key=(int(use), *keys)).generate_state(1)[0])


def run_seed(cfg):
    """The run's seed: ``cfg.SEED``, or when it is negative a random one shared by all processes."""
    if cfg.SEED >= 0:
        return cfg.SEED
    seed = int(comm.shared_random_seed())
    logger.info(f"SEED {cfg.SEED}: the run seed is {seed} (kept in checkpoints, so --resume continues with it)")
    return seed


def seed_global_rngs(seed, accelerators=True):
    """Seed python's, numpy's and torch's global RNGs; torch's on CUDA & co. too unless ``accelerators`` is False
    (a sample's mapping only uses the CPU's, and torch.manual_seed costs ~0.5 ms here on a CPU-only machine).
    Detectron2's seed_all_rng also rewrites PYTHONHASHSEED, pointless thousands of times a run."""
    random.seed(seed)
    np.random.seed(seed)
    (torch.manual_seed if accelerators else torch.default_generator.manual_seed)(seed)


@contextlib.contextmanager
def preserved_rngs():
    """Run a block without changing python's, numpy's and torch's (CPU) global RNG states."""
    states = random.getstate(), np.random.get_state(), torch.get_rng_state()
    try:
        yield
    finally:
        random.setstate(states[0])
        np.random.set_state(states[1])
        torch.set_rng_state(states[2])


def _random_subset_sampler(size, subset_ratio, *, seed):
    return RandomSubsetTrainingSampler(size, subset_ratio, seed_shuffle=seed,
                                       seed_subset=derive_seed(seed, SeedUse.SUBSET))


def training_sampler_factory(cfg, dataset_dicts):
    """``seed -> sampler``: the Detectron2 training sampler ``DATALOADER.SAMPLER_TRAIN`` names, seeded explicitly
    (Detectron2 seeds it with a random number drawn when the loader is built)."""
    name = cfg.DATALOADER.SAMPLER_TRAIN
    if name == "TrainingSampler":
        return functools.partial(TrainingSampler, len(dataset_dicts))
    if name == "RepeatFactorTrainingSampler":
        factors = RepeatFactorTrainingSampler.repeat_factors_from_category_frequency(
            dataset_dicts, cfg.DATALOADER.REPEAT_THRESHOLD)
        return functools.partial(RepeatFactorTrainingSampler, factors)
    if name == "RandomSubsetTrainingSampler":
        return functools.partial(_random_subset_sampler, len(dataset_dicts), cfg.DATALOADER.RANDOM_SUBSET_RATIO)
    raise ValueError(f"DATALOADER.SAMPLER_TRAIN: unknown training sampler {name!r}; seg_d2's resumable loader "
                     "knows TrainingSampler, RepeatFactorTrainingSampler and RandomSubsetTrainingSampler")


def stream_positions(sampler, start, replay=()):
    """``(position, dataset index)`` of this process's stream: the positions in ``replay`` (all below ``start``),
    then ``start``, ``start + 1``, ... (the sampler is replayed from its beginning: indices only, cheap)."""
    replay = set(replay)
    for position, index in enumerate(sampler):
        if position >= start or position in replay:
            yield position, index


class _MappedSamples(torchdata.IterableDataset):
    """``(position, index, mapped or None, skipped or None)`` for the positions of :func:`stream_positions`;
    in a DataLoader worker, only that worker's share (every num_workers-th, so the loader yields them in order)."""

    def __init__(self, loader, sampler, start, replay):
        self.dataset, self.mapper, self.skip_bad_samples = loader.dataset, loader.mapper, loader.skip_bad_samples
        self.seed, self.rank, self.world_size = loader.seed, loader.rank, loader.world_size
        self.sampler, self.start, self.replay = sampler, start, replay

    def __iter__(self):
        positions = stream_positions(self.sampler, self.start, self.replay)
        worker = torchdata.get_worker_info()
        if worker is not None:
            positions = itertools.islice(positions, worker.id, None, worker.num_workers)
        for position, index in positions:
            yield position, index, *self._map(position, self.dataset[index])

    def _map(self, position, dataset_dict):
        # this process's stream is the global one's positions rank, rank + world_size, ...
        seed = derive_seed(self.seed, SeedUse.SAMPLE, self.rank + position * self.world_size)
        seed_global_rngs(seed, accelerators=False)
        if hasattr(self.mapper, "set_random_seed"):  # a mapper with its own generators (albumentations)
            self.mapper.set_random_seed(seed)
        return map_or_skip(self.mapper, dataset_dict, self.skip_bad_samples)


class ResumableTrainLoader:
    """Batches (lists of mapped dicts) of an infinite training stream, equal for equal (seed, position) whatever
    ``NUM_WORKERS``; with :meth:`state_dict` / :meth:`load_state_dict` a resumed run gets the batches an
    uninterrupted one would have. A drop-in for ``build_detection_train_loader``'s result."""

    @configurable
    def __init__(self, dataset, *, mapper, sampler, total_batch_size, seed, aspect_ratio_grouping=True,
                 num_workers=0, skip_bad_samples=False):
        """
        Args:
            dataset: list of dataset dicts (or a map-style dataset of them).
            mapper: dataset dict -> model input dict (None: drop the sample).
            sampler: ``seed -> Detectron2 training sampler`` (see :func:`training_sampler_factory`).
            total_batch_size: images per iteration over all processes.
            seed: the run seed; every sample's augmentation seed derives from it and its stream position.
            aspect_ratio_grouping: batch images with width > height apart from the others, as Detectron2.
            num_workers: DataLoader worker processes that map samples.
            skip_bad_samples: a sample whose mapping raises is skipped (and listed) instead of ending the run.
        """
        world_size = comm.get_world_size()
        if total_batch_size <= 0 or total_batch_size % world_size:
            raise ValueError(f"SOLVER.IMS_PER_BATCH ({total_batch_size}) must be a positive multiple of the "
                             f"number of processes ({world_size})")
        self.dataset = DatasetFromList(dataset, copy=False) if isinstance(dataset, list) else dataset
        self.mapper, self.sampler, self.seed = mapper, sampler, seed
        self.batch_size = total_batch_size // world_size
        self.rank, self.world_size = comm.get_rank(), world_size
        self.aspect_ratio_grouping, self.num_workers = aspect_ratio_grouping, num_workers
        self.skip_bad_samples = skip_bad_samples
        self.skipped = {}  # dataset index -> {"file_name", "image_id", "reason", "count"}
        self._next_position = 0  # the first stream position no batch has taken yet
        self._buckets = {}  # bucket -> [(position, mapped dict)] waiting for a full batch
        self._replay = []  # positions waiting in buckets when the state was loaded: mapped again
        self._failure_streak = 0

    @classmethod
    def from_config(cls, cfg, mapper=None, seed=None):
        dataset = get_detection_dataset_dicts(
            cfg.DATASETS.TRAIN,
            filter_empty=cfg.DATALOADER.FILTER_EMPTY_ANNOTATIONS,
            min_keypoints=cfg.MODEL.ROI_KEYPOINT_HEAD.MIN_KEYPOINTS_PER_IMAGE if cfg.MODEL.KEYPOINT_ON else 0,
            proposal_files=cfg.DATASETS.PROPOSAL_FILES_TRAIN if cfg.MODEL.LOAD_PROPOSALS else None,
        )
        logger.info(f"Using training sampler {cfg.DATALOADER.SAMPLER_TRAIN} in seg_d2's resumable loader")
        return {
            "dataset": dataset,
            "mapper": build_mapper(cfg, is_train=True) if mapper is None else mapper,
            "sampler": training_sampler_factory(cfg, dataset),
            "total_batch_size": cfg.SOLVER.IMS_PER_BATCH,
            "seed": run_seed(cfg) if seed is None else seed,
            "aspect_ratio_grouping": cfg.DATALOADER.ASPECT_RATIO_GROUPING,
            "num_workers": cfg.DATALOADER.NUM_WORKERS,
            "skip_bad_samples": cfg.DATALOADER.SKIP_BAD_SAMPLES,
        }

    def __iter__(self):
        return self._batches()  # a generator: nothing starts before the first next(), i.e. after a resume

    def _batches(self):
        replay = sorted(self._replay + [position for bucket in self._buckets.values() for position, _ in bucket])
        self._replay, self._buckets = [], {}
        samples = _MappedSamples(self, self.sampler(seed=self.seed), self._next_position, replay)
        # generator: the workers' base seed is not drawn from torch's global RNG (each sample is seeded anyway)
        loader = torchdata.DataLoader(samples, batch_size=None, num_workers=self.num_workers,
                                      collate_fn=trivial_batch_collator, generator=torch.Generator())
        items = iter(loader)
        # With NUM_WORKERS 0 samples are mapped (and the global RNGs seeded) in this process, inside next().
        rngs_kept = preserved_rngs if self.num_workers == 0 else contextlib.nullcontext
        while True:
            with rngs_kept():
                batch = None
                while batch is None:
                    batch = self._take(*next(items))
            yield batch

    def _take(self, position, index, mapped, skipped):
        """Put one mapped sample in its bucket; the bucket's batch when it is full."""
        self._next_position = max(self._next_position, position + 1)
        if mapped is None:
            self._skip(index, skipped)
            return None
        self._failure_streak = 0
        key = self._bucket_of(mapped)
        bucket = self._buckets.setdefault(key, [])
        bucket.append((position, mapped))
        if len(bucket) < self.batch_size:
            return None
        del self._buckets[key]
        return [sample for _, sample in bucket]

    def _bucket_of(self, mapped):
        if not self.aspect_ratio_grouping:
            return 0
        if "width" not in mapped or "height" not in mapped:
            raise KeyError(f"{describe_sample(mapped)}: DATALOADER.ASPECT_RATIO_GROUPING needs 'width' and "
                           "'height' in the mapper's output")
        return 0 if mapped["width"] > mapped["height"] else 1  # AspectRatioGroupedDataset's two groups

    def _skip(self, index, skipped):
        entry = self.skipped.setdefault(index, {**skipped, "count": 0})
        entry["count"] += 1
        if entry["count"] == 1:
            log = logger.warning if self.skip_bad_samples else logger.info
            log(f"Training without {describe_sample(skipped)}: {skipped['reason']}")
        self._failure_streak += 1
        if self._failure_streak >= len(self.dataset):
            raise RuntimeError(f"{self._failure_streak} training samples in a row were skipped (the dataset has "
                               f"{len(self.dataset)}); the last: {describe_sample(skipped)}: {skipped['reason']}")

    def _stream(self):
        """What the batch sequence depends on besides the seed; a resume with other values is not exact."""
        return {
            "dataset_size": len(self.dataset),
            "sampler": getattr(self.sampler, "func", self.sampler).__name__,
            "batch_size_per_process": self.batch_size,
            "processes": self.world_size,
            "aspect_ratio_grouping": bool(self.aspect_ratio_grouping),
        }

    def state_dict(self):
        waiting = self._replay + [position for bucket in self._buckets.values() for position, _ in bucket]
        return {
            "seed": self.seed,
            "next_position": self._next_position,
            "waiting_positions": sorted(waiting),
            "skipped": [{"index": index, **entry} for index, entry in sorted(self.skipped.items())],
            "stream": self._stream(),
        }

    def load_state_dict(self, state):
        """Continue from ``state`` (call before iterating)."""
        changed = {k: (v, self._stream().get(k)) for k, v in state["stream"].items() if self._stream().get(k) != v}
        if changed:
            logger.warning("The training stream differs from the checkpoint's (" + ", ".join(
                f"{k}: {old} -> {new}" for k, (old, new) in changed.items()) + "): the batches after this resume "
                "are not those of an uninterrupted run")
        self.seed, self._next_position = state["seed"], state["next_position"]
        self._replay, self._buckets = list(state["waiting_positions"]), {}
        self.skipped = {entry["index"]: {k: v for k, v in entry.items() if k != "index"} for entry in state["skipped"]}
