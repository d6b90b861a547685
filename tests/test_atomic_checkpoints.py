"""Checkpoint files are replaced whole or not at all; resume picks the newest file that loads."""

import errno
import io
import logging
import os
from types import SimpleNamespace

from vissl_issl.plugin import checkpointing

import pytest
import torch

from vissl_issl.atomic_files import DiskFullError, leftovers, replace_symlink, write_atomically


def test_a_write_that_fails_part_way_leaves_the_previous_file_and_no_partial_one(tmp_path):
    path = tmp_path / "model_phase1.torch"
    path.write_bytes(b"previous")

    def fail_half_way(file):
        file.write(b"new content, half of it")
        raise RuntimeError("killed")

    with pytest.raises(RuntimeError, match="killed"):
        write_atomically(path, fail_half_way)
    assert path.read_bytes() == b"previous"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model_phase1.torch"]


class FillsUp(io.RawIOBase):
    """A file on a disk that is full after ``room`` bytes."""

    def __init__(self, file, room: int):
        self.file, self.room = file, room

    def writable(self) -> bool:
        return True

    def write(self, data) -> int:
        if len(data) > self.room:
            raise OSError(errno.ENOSPC, "No space left on device")
        self.room -= len(data)
        return self.file.write(data)


def write_then_fill(file):
    file.write(b"x" * 1000)
    raise OSError(errno.ENOSPC, "No space left on device")


def torch_save_then_fill(file):
    # torch.save raises "unexpected pos" from its zip writer's clean-up, the ENOSPC as its context.
    torch.save({"weights": torch.zeros(10**6)}, io.BufferedWriter(FillsUp(file, 100_000)))


@pytest.mark.parametrize("disk_full", [write_then_fill, torch_save_then_fill])
def test_a_full_disk_is_a_clear_error_and_the_previous_checkpoint_stays(tmp_path, disk_full):
    path = tmp_path / "model_phase1.torch"
    path.write_bytes(b"previous")
    with pytest.raises(
        DiskFullError, match=r"while writing .*model_phase1.torch .*MiB free.*previous version is intact"
    ):
        write_atomically(path, disk_full)
    assert path.read_bytes() == b"previous"
    assert list(leftovers(tmp_path)) == []


def test_the_temporary_file_is_hidden_from_checkpoint_scans(tmp_path):
    seen = []
    write_atomically(tmp_path / "model_final_checkpoint_phase3.torch", lambda file: seen.extend(tmp_path.iterdir()))
    (temporary,) = seen
    assert temporary.name.startswith(".") and not temporary.name.endswith(".torch")
    assert checkpointing.CHECKPOINT_NAME.fullmatch(temporary.name) is None


def test_the_symlink_is_replaced_in_one_rename(tmp_path):
    link = tmp_path / "checkpoint.torch"
    replace_symlink(tmp_path / "model_phase0.torch", link)
    replace_symlink(tmp_path / "model_phase1.torch", link)
    assert os.readlink(link) == str(tmp_path / "model_phase1.torch")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint.torch"]


def config(iteration_frequency=-1, overwrite=False, nth_latest=1, auto_resume=True):
    return SimpleNamespace(
        CHECKPOINT=SimpleNamespace(
            CHECKPOINT_ITER_FREQUENCY=iteration_frequency,
            OVERWRITE_EXISTING=overwrite,
            LATEST_CHECKPOINT_RESUME_FILE_NUM=nth_latest,
            AUTO_RESUME=auto_resume,
        )
    )


def save(path, iteration):
    torch.save({"classy_state_dict": {}, "iteration": iteration}, path)


def names(paths):
    return [path.name for path in paths]


def test_candidates_follow_vissls_order_with_the_other_kind_last(tmp_path):
    for name in ("model_phase2.torch", "model_phase10.torch", "model_iteration40.torch", "model_iteration8.torch"):
        save(tmp_path / name, 0)
    (tmp_path / "model_phase3_shard0.torch").write_bytes(b"")  # listed by its shard_list file, not a candidate
    assert names(checkpointing.candidates(tmp_path, config())) == [
        "model_phase10.torch", "model_phase2.torch", "model_iteration40.torch", "model_iteration8.torch"
    ]  # fmt: skip
    assert names(checkpointing.candidates(tmp_path, config(iteration_frequency=4, nth_latest=2))) == [
        "model_iteration8.torch", "model_phase10.torch", "model_phase2.torch"
    ]  # fmt: skip
    save(tmp_path / "model_final_checkpoint_phase11.torch", 0)
    assert names(checkpointing.candidates(tmp_path, config()))[0] == "model_final_checkpoint_phase11.torch"
    assert "model_final_checkpoint_phase11.torch" not in names(
        checkpointing.candidates(tmp_path, config(overwrite=True))
    )


def test_resume_skips_damaged_checkpoints_with_one_warning_each_and_keeps_them(tmp_path, caplog):
    save(tmp_path / "model_phase0.torch", 4)
    save(tmp_path / "model_phase1.torch", 8)
    (tmp_path / "model_phase1.torch").write_bytes((tmp_path / "model_phase1.torch").read_bytes()[:300])
    (tmp_path / "model_phase2.torch").write_bytes(b"")
    (tmp_path / ".model_phase3.torch.partial-123").write_bytes(b"half")
    with caplog.at_level(logging.WARNING):
        chosen = checkpointing.resume_checkpoint(tmp_path, config())
    assert chosen == tmp_path / "model_phase0.torch"
    warnings = [record.getMessage() for record in caplog.records if record.levelno == logging.WARNING]
    assert len(warnings) == 2
    assert "model_phase2.torch" in warnings[0] and "model_phase1.torch" in warnings[1]
    assert (tmp_path / "model_phase1.torch").exists() and (tmp_path / "model_phase2.torch").exists()
    assert list(leftovers(tmp_path)) == []  # a killed writer's temporary file is removed


def test_resume_without_any_loadable_checkpoint_names_the_directory_and_each_file(tmp_path):
    (tmp_path / "model_phase0.torch").write_bytes(b"garbage")
    torch.save({"not": "a checkpoint"}, tmp_path / "model_phase1.torch")
    with pytest.raises(checkpointing.NoLoadableCheckpointError, match=str(tmp_path)) as error:
        checkpointing.resume_checkpoint(tmp_path, config())
    assert "model_phase0.torch" in str(error.value) and "model_phase1.torch (not a VISSL training checkpoint)" in str(
        error.value
    )


def test_a_fresh_run_and_auto_resume_off_resume_nothing(tmp_path):
    assert checkpointing.resume_checkpoint(tmp_path, config()) is None
    save(tmp_path / "model_phase0.torch", 4)
    assert checkpointing.resume_checkpoint(tmp_path, config(auto_resume=False)) is None


def test_a_damaged_final_checkpoint_does_not_count_as_a_finished_run(tmp_path):
    final = tmp_path / "model_final_checkpoint_phase1.torch"
    save(final, 8)
    assert checkpointing.is_training_finished(config(), str(tmp_path))
    final.write_bytes(final.read_bytes()[:100])
    assert not checkpointing.is_training_finished(config(), str(tmp_path))


def test_a_sharded_checkpoint_loads_only_if_every_shard_loads(tmp_path):
    torch.save({"type": "shard_list", "shards": ["model_phase0_shard0.torch", "model_phase0_shard1.torch"]},
               tmp_path / "model_phase0.torch")  # fmt: skip
    save(tmp_path / "model_phase0_shard0.torch", 4)
    (tmp_path / "model_phase0_shard1.torch").write_bytes(b"cut")
    assert "its shard model_phase0_shard1.torch" in checkpointing.load_problem(tmp_path / "model_phase0.torch")
    save(tmp_path / "model_phase0_shard1.torch", 4)
    assert checkpointing.load_problem(tmp_path / "model_phase0.torch") is None


def test_vissls_exception_log_call_prints_the_exception(caplog):
    fix = checkpointing.ExceptionLogFix()
    logging.getLogger().addFilter(fix)
    try:
        with caplog.at_level(logging.ERROR):
            logging.error("Wrapping up, caught exception: ", RuntimeError("boom"))
    finally:
        logging.getLogger().removeFilter(fix)
    assert caplog.records[-1].getMessage() == "Wrapping up, caught exception: boom"


def test_iteration_checkpoints_turn_on_vissls_stateful_sampler():
    cfg = SimpleNamespace(
        CHECKPOINT=SimpleNamespace(CHECKPOINT_ITER_FREQUENCY=100),
        DATA=SimpleNamespace(TRAIN=SimpleNamespace(USE_STATEFUL_DISTRIBUTED_SAMPLER=False)),
    )
    checkpointing.resume_iterations_exactly(cfg)
    assert cfg.DATA.TRAIN.USE_STATEFUL_DISTRIBUTED_SAMPLER is True
