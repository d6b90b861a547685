"""The one checkpoint reader (vissl_issl/checkpoints.py): VISSL checkpoints (DDP, FSDP
consolidated), state dicts, and one clear error for anything else."""

import re

import pytest
import torch

from vissl_issl.checkpoints import CheckpointError, read_state_dict, read_vissl_model

TRUNK = {"_feature_blocks.conv1.weight": torch.ones(2, 3, 1, 1)}
HEADS = {"0.clf.0.weight": torch.zeros(4, 2)}


def vissl_content(**extra):
    return {"classy_state_dict": {"base_model": {"model": {"trunk": TRUNK, "heads": HEADS}}}, **extra}


@pytest.mark.parametrize("extra", [{}, {"type": "consolidated"}], ids=["ddp", "fsdp_consolidated"])
def test_vissl_checkpoints_give_trunk_and_heads(tmp_path, extra):
    path = tmp_path / "checkpoint.torch"
    torch.save(vissl_content(phase_idx=3, **extra), path)
    model = read_vissl_model(path)
    assert model.trunk.keys() == TRUNK.keys() and torch.equal(
        model.trunk["_feature_blocks.conv1.weight"], TRUNK["_feature_blocks.conv1.weight"]
    )
    assert model.heads.keys() == HEADS.keys()


@pytest.mark.parametrize("kind", ["shard_list", "shard", "slice_list"])
def test_sharded_checkpoints_are_refused_with_the_conversion(tmp_path, kind):
    path = tmp_path / "checkpoint.torch"
    torch.save(vissl_content(type=kind), path)
    with pytest.raises(CheckpointError, match=f"{re.escape(str(path))} is a VISSL '{kind}'.*sharded_to_consolidated"):
        read_vissl_model(path)


def test_a_state_dict_is_not_a_vissl_checkpoint_and_the_reverse(tmp_path):
    state, checkpoint = tmp_path / "state.torch", tmp_path / "checkpoint.torch"
    torch.save({"conv1.weight": torch.zeros(1)}, state)
    torch.save(vissl_content(), checkpoint)
    assert read_state_dict(state).keys() == {"conv1.weight"}
    with pytest.raises(CheckpointError, match=f"{re.escape(str(state))} is not a VISSL checkpoint"):
        read_vissl_model(state)
    with pytest.raises(CheckpointError, match=f"{re.escape(str(checkpoint))} is a VISSL checkpoint, not a state dict"):
        read_state_dict(checkpoint)


@pytest.mark.parametrize(
    "content, message",
    [
        (b"not a checkpoint at all", "is not a torch checkpoint or state dict"),
        (
            {"classy_state_dict": {"base_model": {}}},
            r"has no checkpoint\['classy_state_dict'\]\['base_model'\]\['model'\]",
        ),
        ({"classy_state_dict": {"base_model": {"model": {"heads": {}}}}}, r"\['trunk'\]: not a VISSL checkpoint"),
        ({"conv1.weight": "a string"}, "conv1.weight are not tensors"),
    ],
    ids=["garbage", "no_model", "no_trunk", "not_tensors"],
)
def test_anything_else_gets_one_error_naming_the_file(tmp_path, content, message):
    path = tmp_path / "file.torch"
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        torch.save(content, path)
    reader = read_state_dict if message.startswith("conv1") else read_vissl_model
    with pytest.raises(CheckpointError, match=f"{re.escape(str(path))}.*{message}"):
        reader(path)


def test_a_missing_file_is_named(tmp_path):
    with pytest.raises(CheckpointError, match=f"{re.escape(str(tmp_path / 'none.torch'))}: no such file"):
        read_vissl_model(tmp_path / "none.torch")
