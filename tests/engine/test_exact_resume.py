"""Kill tools/train_net.py with SIGKILL at a random moment after a checkpoint, break the newest checkpoint, resume:
the final weights, optimizer state and evaluation metrics equal an uninterrupted run's, tensor for tensor."""
import json
import random
import shutil
from pathlib import Path

import pytest
import torch

import seg_d2  # noqa: F401
from seg_d2.engine import Trainer, setup_cfg

CONFIGS = Path(__file__).resolve().parents[2] / "configs" / "builtin"
# Small enough for CPU tests; flips, ROI and anchor sampling still draw random numbers every iteration.
DETECTOR = [CONFIGS / "mask_rcnn_R18_shapes.yaml", "MODEL.FPN.OUT_CHANNELS", 32, "MODEL.ROI_BOX_HEAD.FC_DIM", 64,
            "MODEL.ROI_MASK_HEAD.CONV_DIM", 32, "MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE", 64,
            "TEST.DETECTIONS_PER_IMAGE", 10, "SOLVER.MAX_ITER", 8]
SEMANTIC = [CONFIGS / "semantic_unet.yaml", "MODEL.UNET.DEPTH", 2, "MODEL.UNET.BASE_CHANNELS", 8, "SOLVER.MAX_ITER", 10]
# One thread in every run (also this process, whatever OMP_NUM_THREADS says): bit-exactness needs the same count.
SCHEDULE = ["SOLVER.IMS_PER_BATCH", 2, "SOLVER.CHECKPOINT_PERIOD", 2, "SOLVER.WARMUP_ITERS", 3, "SEG_D2.NUM_THREADS", 1]


def final_metrics(output_dir, prefixes=("bbox/", "segm/", "sem_seg/", "panoptic_seg/")):
    """The evaluation results a run wrote last into its metrics.json."""
    metrics = {}
    for line in (Path(output_dir) / "metrics.json").read_text().splitlines():
        metrics.update({k: v for k, v in json.loads(line).items() if k.startswith(prefixes)})
    return metrics


def checkpoint_tensors(path):
    """Every tensor of a checkpoint: the model's and the optimizer state's, by name."""
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    tensors = {f"model.{k}": v for k, v in checkpoint["model"].items()}
    for param, state in checkpoint["trainer"]["_trainer"]["optimizer"]["state"].items():
        tensors.update({f"optimizer.{param}.{k}": v for k, v in state.items() if isinstance(v, torch.Tensor)})
    return tensors


def _truncate_latest_checkpoint(output_dir):
    latest = output_dir / (output_dir / "last_checkpoint").read_text()
    latest.write_bytes(latest.read_bytes()[: latest.stat().st_size // 2])
    return latest.name


def _garble_last_checkpoint(output_dir):
    (output_dir / "last_checkpoint").write_bytes(b"model_00\xff\xfe")  # cut short mid-write, with stray bytes
    return "last_checkpoint"


def _train_uninterrupted(config, opts):
    """Train in this process as tools/train_net.py does in its own (same seeding, one thread)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        trainer = Trainer(setup_cfg(str(config), [str(o) for o in opts]))
        trainer.resume_or_load(resume=False)
        trainer.train()
    finally:
        torch.set_num_threads(threads)


def _metrics_text(metrics):
    return json.dumps(metrics, sort_keys=True)  # NaN (an AP with no ground truth) compares equal as text


@pytest.mark.parametrize("model, kill_after_saves, break_checkpoint, extra", [
    (DETECTOR, (3,), _truncate_latest_checkpoint, []),
    # with 2 DataLoader workers after the kill (the reference has none) and the newest 2 periodic checkpoints kept
    (SEMANTIC, (3, 4), _garble_last_checkpoint, ["DATALOADER.NUM_WORKERS", 2, "SOLVER.CHECKPOINT_KEEP", 2]),
], ids=["mask_rcnn-truncated_pth", "unet-garbled_last_checkpoint-2_workers-keep_2"])
def test_killed_and_resumed_run_equals_uninterrupted_run(tmp_path, model, kill_after_saves, break_checkpoint, extra,
                                                       train_net, train_net_killed):
    config, *overrides = model
    _train_uninterrupted(config, [*overrides, *SCHEDULE, "OUTPUT_DIR", tmp_path / "reference"])
    args = ["--config-file", config, *overrides, *SCHEDULE]

    # The kill lands while the chosen checkpoint is written or in the iteration after; the ones before are whole.
    chance = random.Random()
    saves, delay = chance.choice(kill_after_saves), chance.uniform(0, 0.05)
    out = tmp_path / "killed"
    train_net_killed(*args, *extra, "OUTPUT_DIR", out, when="Saving checkpoint to", skip=saves - 1, delay=delay)
    broken = break_checkpoint(out)
    resumed = train_net("--resume", *args, *extra, "OUTPUT_DIR", out)
    log = resumed.stdout + resumed.stderr
    assert resumed.returncode == 0, log[-4000:]
    assert f"passed over: {out / broken}" in log  # the warning names the broken file and the one resumed from
    start = int(log.split("Starting training from iteration ")[1].split()[0])
    case = f"killed {delay:.3f} s after checkpoint save {saves} began, resumed at iteration {start}"

    expected = checkpoint_tensors(tmp_path / "reference" / "model_final.pth")
    actual = checkpoint_tensors(out / "model_final.pth")
    assert expected.keys() == actual.keys()
    different = [k for k in expected if not torch.equal(expected[k], actual[k])]
    assert not different, f"{case}: {len(different)} of {len(expected)} tensors differ: {different[:5]}"
    resumed_from = checkpoint_tensors(tmp_path / "reference" / f"model_{start - 1:07d}.pth")
    assert sum(not torch.equal(resumed_from[k], actual[k]) for k in actual) > len(actual) // 2, case  # it trained on

    metrics = final_metrics(tmp_path / "reference")
    assert metrics and _metrics_text(final_metrics(out)) == _metrics_text(metrics), case
    if "SOLVER.CHECKPOINT_KEEP" in extra:
        assert sorted(p.name for p in out.glob("model_*.pth")) == ["model_0000007.pth", "model_0000009.pth",
                                                                     "model_final.pth"]
    shutil.rmtree(tmp_path)  # a dozen checkpoints
