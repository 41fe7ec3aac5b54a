"""FaultTolerantCheckpointer: atomic, checksummed writes; resume falls back past broken files naming them;
errors name the file; the checkpoint hook keeps the newest SOLVER.CHECKPOINT_KEEP periodic checkpoints."""
import hashlib
import os
import types

import pytest
import torch

import seg_d2  # noqa: F401
from seg_d2.engine.checkpoint import CheckpointError, FaultTolerantCheckpointer, atomic_write
from seg_d2.engine.hooks import PeriodicCheckpointer


class Counter:
    """A checkpointable training state."""

    def __init__(self):
        self.iteration = -1

    def state_dict(self):
        return {"iteration": self.iteration}

    def load_state_dict(self, state):
        self.iteration = state["iteration"]


def checkpointer(folder, value=0.0):
    model = torch.nn.Linear(3, 2)
    torch.nn.init.constant_(model.weight, value)
    return FaultTolerantCheckpointer(model, str(folder), trainer=Counter())


@pytest.fixture
def three_checkpoints(tmp_path):
    """model_0000001 .. model_0000003 (weights 1, 2, 3), saved in that order; last_checkpoint names the third."""
    for iteration in (1, 2, 3):
        saver = checkpointer(tmp_path, value=iteration)
        saver.checkpointables["trainer"].iteration = iteration
        saver.save(f"model_{iteration:07d}")
        os.utime(tmp_path / f"model_{iteration:07d}.pth", (iteration, iteration))  # mtimes in saving order
    return tmp_path


def resume(folder):
    loader = checkpointer(folder)
    loader.resume_or_load("", resume=True)
    return loader.checkpointables["trainer"].iteration, float(loader.model.weight[0, 0].detach())


def test_save_writes_checkpoint_checksum_and_tag_and_no_temporary_file(three_checkpoints):
    names = sorted(os.listdir(three_checkpoints))
    assert names == ["last_checkpoint"] + [f"model_000000{i}.pth{s}" for i in (1, 2, 3) for s in ("", ".sha256")]
    assert (three_checkpoints / "last_checkpoint").read_text() == "model_0000003.pth"
    umask = os.umask(0)
    os.umask(umask)
    assert (three_checkpoints / "model_0000003.pth").stat().st_mode & 0o777 == 0o666 & ~umask  # as open() would
    digest = (three_checkpoints / "model_0000003.pth.sha256").read_text().split()
    assert digest == [hashlib.sha256((three_checkpoints / "model_0000003.pth").read_bytes()).hexdigest(),
                      "model_0000003.pth"]  # sha256sum -c format
    assert resume(three_checkpoints) == (3, 3.0)


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    target = tmp_path / "last_checkpoint"
    target.write_text("model_0000001.pth")
    (tmp_path / ".last_checkpoint.dead.tmp").write_text("left by a killed write")

    def crash(file):
        file.write(b"model_00")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        atomic_write(str(target), crash)
    assert target.read_text() == "model_0000001.pth" and os.listdir(tmp_path) == ["last_checkpoint"]


def _truncate(path):
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _flip_a_byte(path):
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF  # torch.load reads this without complaint: only the checksum tells
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("damage, passed_over, why", [
    (lambda d: _truncate(d / "model_0000003.pth"), "model_0000003.pth", "does not match its checksum"),
    (lambda d: _flip_a_byte(d / "model_0000003.pth"), "model_0000003.pth", "does not match its checksum"),
    (lambda d: (_truncate(d / "model_0000003.pth"), os.remove(d / "model_0000003.pth.sha256")),
     "model_0000003.pth", "not a readable checkpoint (RuntimeError: PytorchStreamReader failed"),
    (lambda d: (d / "model_0000003.pth").write_bytes(b""), "model_0000003.pth", "does not match"),
    (lambda d: (d / "last_checkpoint").write_bytes(b"\xff\xfe"), "last_checkpoint", "UnicodeDecodeError"),
    (lambda d: (d / "last_checkpoint").write_text("model_00"), "last_checkpoint", "names 'model_00', which is not"),
    (lambda d: os.remove(d / "last_checkpoint"), "last_checkpoint", "FileNotFoundError"),
])
def test_resume_falls_back_to_the_newest_readable_checkpoint(three_checkpoints, caplog, damage, passed_over, why):
    damage(three_checkpoints)
    expected = (2, 2.0) if passed_over.startswith("model") else (3, 3.0)
    assert resume(three_checkpoints) == expected
    resumed_from = three_checkpoints / f"model_000000{expected[0]}.pth"
    assert f"Resuming from {resumed_from}, the newest readable checkpoint; passed over: " \
           f"{three_checkpoints / passed_over}" in caplog.text
    assert why in caplog.text


def test_no_readable_checkpoint_is_an_error_listing_every_file(three_checkpoints):
    for iteration in (1, 2, 3):
        _truncate(three_checkpoints / f"model_000000{iteration}.pth")
    with pytest.raises(CheckpointError, match="no readable checkpoint in") as error:
        resume(three_checkpoints)
    assert all(f"model_000000{i}.pth: content does not match" in str(error.value) for i in (1, 2, 3))


def test_weights_without_training_state_are_passed_over(three_checkpoints, caplog):
    torch.save({"model": torch.nn.Linear(3, 2).state_dict()}, three_checkpoints / "model_best.pth")  # newest
    assert resume(three_checkpoints) == (3, 3.0)
    (three_checkpoints / "last_checkpoint").write_text("model_best.pth")
    assert resume(three_checkpoints) == (3, 3.0)
    assert "model_best.pth: holds model weights but no training state" in caplog.text


def test_load_errors_name_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match=f"checkpoint {tmp_path / 'nope.pth'}: no such file"):
        checkpointer(tmp_path).load(str(tmp_path / "nope.pth"))
    (tmp_path / "cut.pth").write_bytes(b"")
    with pytest.raises(CheckpointError, match=rf"{tmp_path / 'cut.pth'}: not a readable checkpoint \(EOFError"):
        checkpointer(tmp_path).load(str(tmp_path / "cut.pth"))


def test_checkpoint_keep_removes_older_periodic_checkpoints_only(tmp_path):
    for name in [f"model_{i:07d}.pth" for i in (1, 3, 5, 7, 20)] + ["model_final.pth", "model_best.pth"]:
        (tmp_path / name).write_bytes(b"x")
        (tmp_path / (name + ".sha256")).write_bytes(b"x")
    hook = PeriodicCheckpointer(period=2, keep=2)
    saved = []
    checkpoint = types.SimpleNamespace(save_to_disk=True, save_dir=str(tmp_path), save=lambda name, **_: saved.append(name))
    hook.trainer = types.SimpleNamespace(iter=7, max_iter=100, checkpointer=checkpoint, collect_data_states=lambda: None)
    hook.after_step()
    assert saved == ["model_0000007"]
    # 20 is from an earlier try that was resumed from before it: not counted, overwritten when training gets there
    assert sorted(os.listdir(tmp_path)) == [f"{n}{s}" for n in ("model_0000005.pth", "model_0000007.pth",
                                            "model_0000020.pth", "model_best.pth", "model_final.pth")
                                            for s in ("", ".sha256")]
    with pytest.raises(ValueError, match="SOLVER.CHECKPOINT_KEEP must be >= 0"):
        PeriodicCheckpointer(period=2, keep=-1)
