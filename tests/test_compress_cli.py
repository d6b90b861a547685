"""tools/compress.py end to end on a few digits, with an untrained ResNet-18 + entropy_bottleneck
saved as a VISSL checkpoint (nothing is trained)."""

import json
from pathlib import Path
from typing import Optional

import vissl_issl.plugin  # noqa: F401  (compat shims, head registration)

import numpy as np
import pytest
import torch

from vissl_issl.compression import tool as compress
from vissl_issl.compression.bitstream import read_container
from vissl_issl.compression.bottleneck import encode_dataset, find_bottleneck, load_model

LIMIT = 40
CODE_DIM = 16
FAST_PROBE = ["--epochs", "2", "--lrs", "0.1", "--wds", "1e-6"]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def pretraining_config(seed: int) -> dict:
    """VISSL's defaults with the digits trunk and one entropy_bottleneck head, as train_config.yaml
    holds it after VISSL's config inference."""
    import vissl.config
    from omegaconf import OmegaConf

    defaults = OmegaConf.load(Path(vissl.config.__file__).with_name("defaults.yaml"))
    config = OmegaConf.to_container(defaults.config, resolve=True)
    config["SEED_VALUE"] = seed
    model = config["MODEL"]
    model["TRUNK"]["NAME"] = "tv_resnet"
    model["TRUNK"]["TV_RESNET"] = {"DEPTH": 18, "SMALL_IMAGE_STEM": True, "MAXPOOL": True}
    model["HEAD"]["PARAMS"] = [["entropy_bottleneck", {"dims": [512, CODE_DIM]}]]
    model["_MODEL_INIT_SEED"] = seed
    config["DATA"]["TRAIN"]["TRANSFORMS"] = [
        {"name": "ToTensor"},
        {"name": "Normalize", "mean": [0.5] * 3, "std": [0.5] * 3},
    ]
    return config


def fake_checkpoint(directory: Path, seed: int, config: Optional[dict] = None) -> Path:
    """An untrained model saved in VISSL's layout, with its train_config.yaml beside it."""
    from omegaconf import OmegaConf
    from vissl.config import AttrDict
    from vissl.models import build_model

    directory.mkdir(parents=True)
    config = config or pretraining_config(seed)
    torch.manual_seed(seed)
    model = build_model(AttrDict(config).MODEL, AttrDict(config).OPTIMIZER)
    head = model.heads[0]
    with torch.no_grad():  # a code scale that gives several symbols per dimension
        head.log_scale.fill_(1.5)
    head.update()  # the checkpoint holds coder tables, as after an EntropyCoderUpdate hook
    path = directory / "model_final_checkpoint_phase0.torch"
    torch.save({"classy_state_dict": {"base_model": model.get_classy_state()}}, path)
    OmegaConf.save(OmegaConf.create(config), directory / "train_config.yaml")
    return path


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    return fake_checkpoint(tmp_path_factory.mktemp("compressor") / "run", seed=0)


def eval_forward(checkpoint: Path, split: str):
    """The model's evaluation forward over the first LIMIT images of a split."""
    args = compress.parse_args(["encode", "--checkpoint", str(checkpoint), "--data", "digits",
                                "--limit", str(LIMIT), "--out", "unused"])  # fmt: skip
    state = compress.setup(args)
    dataset = compress.split_datasets(args, compress.T.Compose([state.pil_transform, state.tensor_transform]))[split]
    return encode_dataset(state.model, dataset, compress=False)


def test_decode_of_encode_is_the_eval_forward_z_hat(checkpoint, tmp_path, capsys):
    codes, decoded = tmp_path / "codes.bin", tmp_path / "decoded.npy"
    compress.main(["encode", "--checkpoint", str(checkpoint), "--data", "digits", "--split", "test",
                   "--limit", str(LIMIT), "--batch-size", "16", "--out", str(codes)])  # fmt: skip
    assert "images/s" in capsys.readouterr().out
    container = read_container(codes)
    assert len(container.records) == LIMIT and container.shape == (CODE_DIM,)
    assert container.meta["split"] == "test" and container.meta["coder"].endswith("EntropyBottleneckHead")
    compress.main(["decode", "--checkpoint", str(checkpoint), "--codes", str(codes), "--out", str(decoded)])
    assert "images/s" in capsys.readouterr().out
    z_hat = np.load(decoded)
    expected = eval_forward(checkpoint, "test")
    assert z_hat.shape == (LIMIT, CODE_DIM) and z_hat.dtype == np.float32
    np.testing.assert_array_equal(z_hat, expected.z_hat)
    assert len(np.unique(z_hat)) > 3  # not a degenerate all-zero code


def test_decode_refuses_damaged_files_and_foreign_coders_before_writing(checkpoint, tmp_path):
    codes, decoded = tmp_path / "codes.bin", tmp_path / "decoded.npy"
    compress.main(["encode", "--checkpoint", str(checkpoint), "--data", "digits", "--limit", "8", "--out", str(codes)])
    other = fake_checkpoint(tmp_path / "other", seed=1)
    with pytest.raises(SystemExit, match="cannot decode it"):
        compress.main(["decode", "--checkpoint", str(other), "--codes", str(codes), "--out", str(decoded)])
    assert not decoded.exists()
    codes.write_bytes(codes.read_bytes()[:-3])
    with pytest.raises(SystemExit, match=f"{codes}: truncated"):
        compress.main(["decode", "--checkpoint", str(checkpoint), "--codes", str(codes), "--out", str(decoded)])
    assert not decoded.exists()


def test_load_model_rejects_a_checkpoint_of_other_heads(checkpoint, tmp_path):
    state = torch.load(checkpoint, map_location="cpu", weights_only=False)
    state["classy_state_dict"]["base_model"]["model"]["heads"] = {"0.other.weight": torch.zeros(1)}
    broken = tmp_path / "broken.torch"
    torch.save(state, broken)
    config = compress.probe.load_config(str(checkpoint), None, [])[0]
    with pytest.raises(ValueError, match="heads do not match"):
        load_model(str(broken), config)
    model = load_model(str(checkpoint), config)
    assert find_bottleneck(model) == 0 and not model.training


@pytest.mark.slow
def test_report_prints_the_table_and_writes_results(checkpoint, tmp_path, capsys):
    out = tmp_path / "report"
    compress.main(["report", "--checkpoint", str(checkpoint), "--data", "digits", "--limit", str(LIMIT),
                   "--codecs", "jpeg", "png", "--qualities", "20", "90", *FAST_PROBE, "--out", str(out)])  # fmt: skip
    printed = capsys.readouterr().out
    table = (out / "report.md").read_text()
    assert table.strip() in printed
    for row in ("| z_hat, entropy coded |", "| z, unquantised codes |", "| trunk features |", "| jpeg", "| png"):
        assert row in table
    results = json.loads((out / "results.json").read_text())
    for split in ("train", "test"):
        summary = results["splits"][split]
        container = Path(summary["container"])
        assert summary["count"] == LIMIT and summary["decoded_vs_eval_z_hat_max_abs"] == 0.0
        assert summary["file_bits_per_image"] == pytest.approx(8 * container.stat().st_size / LIMIT)
        assert summary["file_bits_per_image"] > summary["payload_bits_per_image"] > 0
        assert summary["estimated_bits_per_image"] > 0
    assert set(results["probe"]) == {"z_hat", "z", "trunk"}
    points = results["classical"]["points"]
    assert [point["label"] for point in points] == ["jpeg q=20", "jpeg q=90", "png lossless"]
    assert set(results["classical"]["matched"]) == {"jpeg", "png"}
    jpeg = [point["bits_per_image"]["test"] for point in points[:2]]
    assert jpeg[0] < jpeg[1]

    png = tmp_path / "rate_accuracy.png"
    compress.main(["plot", "--reports", str(out), "--out", str(png)])
    assert png.stat().st_size > 1000
