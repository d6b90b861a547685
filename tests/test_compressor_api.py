"""The compressor API (vissl_issl/compression/compressor.py) and hubconf's ``compressor``: built
without VISSL from an untrained ResNet-18 + entropy_bottleneck saved as a VISSL checkpoint, its
codes are those of VISSL's model, and its containers are tools/compress.py's."""

import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from PIL import Image
from test_compress_cli import CODE_DIM, LIMIT, eval_forward, fake_checkpoint, pretraining_config
from torch.utils.data import TensorDataset

from conftest import REPO
from vissl_issl import hub
from vissl_issl.checkpoints import CheckpointError
from vissl_issl.compression import tool as compress
from vissl_issl.compression.compressor import Compressor

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("compressors")
    return {seed: fake_checkpoint(root / f"seed{seed}", seed=seed) for seed in (0, 1)}


@pytest.fixture(scope="module")
def compressor(runs) -> Compressor:
    return Compressor.from_checkpoint(runs[0])


@pytest.fixture(scope="module")
def images(runs) -> torch.Tensor:
    """The first LIMIT test digits as tools/compress.py feeds them (16 px RGB, normalised)."""
    args = compress.parse_args(["encode", "--checkpoint", str(runs[0]), "--data", "digits", "--limit", str(LIMIT),
                                "--out", "unused"])  # fmt: skip
    state = compress.setup(args)
    dataset = compress.split_datasets(args, compress.T.Compose([state.pil_transform, state.tensor_transform]))["test"]
    return torch.stack([dataset[index][0] for index in range(LIMIT)])


def test_decompress_of_compress_is_vissls_eval_forward(runs, compressor, images):
    vissl = eval_forward(runs[0], "test")
    z_hat, z, bits = compressor(images)
    records = compressor.compress(images)
    assert len(records) == LIMIT and all(isinstance(record, bytes) for record in records)
    assert torch.equal(compressor.decompress(records), z_hat)
    torch.testing.assert_close(z, torch.from_numpy(vissl.z), atol=1e-4, rtol=0)
    assert torch.equal(z_hat, torch.from_numpy(vissl.z_hat))
    torch.testing.assert_close(compressor.rate(images), torch.from_numpy(vissl.estimated_bits), atol=1e-3, rtol=1e-5)
    assert z_hat.shape == (LIMIT, CODE_DIM) and len(torch.unique(z_hat)) > 3  # codes, not a constant


def test_preprocess_is_the_pretraining_normalize(compressor):
    image = Image.fromarray(np.full((16, 16, 3), 255, dtype=np.uint8))
    assert torch.equal(compressor.preprocess(image), torch.ones(3, 16, 16))  # (1 - 0.5) / 0.5


def test_dataset_round_trip_and_the_cli_reads_its_container(runs, compressor, images, tmp_path, capsys):
    path = tmp_path / "codes.bin"
    size = compressor.compress_dataset(TensorDataset(images, torch.arange(LIMIT)), path, batch_size=16)
    assert size.count == LIMIT
    codes = compressor.decompress_dataset(path)
    assert torch.equal(codes, compressor(images)[0])
    decoded = tmp_path / "decoded.npy"
    compress.main(["decode", "--checkpoint", str(runs[0]), "--codes", str(path), "--out", str(decoded)])
    np.testing.assert_array_equal(np.load(decoded), codes.numpy())


def test_decompress_dataset_reads_the_cli_container(runs, compressor, tmp_path, capsys):
    path = tmp_path / "cli.bin"
    compress.main(["encode", "--checkpoint", str(runs[0]), "--data", "digits", "--limit", str(LIMIT),
                   "--out", str(path)])  # fmt: skip
    assert torch.equal(compressor.decompress_dataset(path), torch.from_numpy(eval_forward(runs[0], "test").z_hat))


def test_another_coders_container_is_refused(runs, compressor, images, tmp_path):
    path = tmp_path / "other.bin"
    Compressor.from_checkpoint(runs[1]).compress_dataset(images, path)
    with pytest.raises(ValueError, match=f"{path}.*coded by the coder of .*seed1.*differs"):
        compressor.decompress_dataset(path)


def test_trunk_from_other_weights(runs, compressor, images, tmp_path):
    """A feature compressor + its frozen trunk given apart: the trunk's torchvision state dict."""
    torchvision_file = tmp_path / "trunk.pth"
    torch.save(hub.vissl_to_torchvision(hub.read_vissl_trunk(runs[0]), runs[0]), torchvision_file)
    apart = Compressor.from_checkpoint(runs[0], trunk=str(torchvision_file))
    assert torch.equal(apart(images)[0], compressor(images)[0])
    other = Compressor.from_checkpoint(runs[0], trunk=str(runs[1]))  # another trunk: other codes
    assert not torch.equal(other(images)[0], compressor(images)[0])


def test_a_frozen_trunk_compressor_codes_through_the_cli_and_the_api(tmp_path, capsys):
    """A feature compressor's model: VISSL wraps its frozen trunk in a FeatureExtractorModel (whose
    forward needs feature names, and whose weights it saves under ``base_model.``)."""
    config = pretraining_config(seed=0)
    config["MODEL"]["FEATURE_EVAL_SETTINGS"].update(
        EVAL_MODE_ON=True, FREEZE_TRUNK_ONLY=True, SHOULD_FLATTEN_FEATS=True,
        LINEAR_EVAL_FEAT_POOL_OPS_MAP=[["res5avg", ["Identity", []]]],
    )  # fmt: skip
    checkpoint = fake_checkpoint(tmp_path / "frozen", seed=0, config=config)
    assert all(key.startswith("base_model.") for key in hub.read_vissl_trunk(checkpoint))
    path = tmp_path / "codes.bin"
    compress.main(["encode", "--checkpoint", str(checkpoint), "--data", "digits", "--limit", str(LIMIT),
                   "--out", str(path)])  # fmt: skip
    api = Compressor.from_checkpoint(checkpoint)
    assert torch.equal(api.decompress_dataset(path), torch.from_numpy(eval_forward(checkpoint, "test").z_hat))


def test_checkpoint_errors_name_the_problem(runs, tmp_path):
    run = tmp_path / "not_a_compressor"
    run.mkdir()
    checkpoint = run / runs[0].name
    checkpoint.write_bytes(runs[0].read_bytes())
    config = OmegaConf.load(runs[0].parent / "train_config.yaml")
    config.MODEL.HEAD.PARAMS = [["mlp", {"dims": [512, 10]}]]
    OmegaConf.save(config, run / "train_config.yaml")
    with pytest.raises(CheckpointError, match=r"heads are \['mlp'\].*'entropy_bottleneck' as the first head"):
        Compressor.from_checkpoint(checkpoint)
    (run / "train_config.yaml").unlink()
    with pytest.raises(CheckpointError, match="no train_config.yaml beside it"):
        Compressor.from_checkpoint(checkpoint)
    with pytest.raises(ValueError, match=r"shape \(16, 16\).*\(N, C, H, W\)"):
        Compressor.from_checkpoint(runs[0]).compress(torch.zeros(16, 16))


@pytest.mark.slow
def test_hub_entrypoint_builds_with_vissl_blocked(runs, compressor, images, tmp_path):
    torch.save(images, tmp_path / "images.pt")
    script = textwrap.dedent(
        f"""
        import sys
        sys.modules["vissl"] = sys.modules["classy_vision"] = None  # importing them now raises ImportError
        import torch
        compressor = torch.hub.load({str(REPO)!r}, "compressor", {str(runs[0])!r}, source="local")
        images = torch.load({str(tmp_path / "images.pt")!r})
        torch.save(compressor.decompress(compressor.compress(images)), {str(tmp_path / "codes.pt")!r})
        loaded = sorted(m for m in sys.modules if m.split(".")[0] in ("vissl", "classy_vision") and sys.modules[m])
        print("loaded:", loaded)
        """
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip().splitlines()[-1] == "loaded: []"
    assert torch.equal(torch.load(tmp_path / "codes.pt"), compressor(images)[0])


@pytest.mark.slow
def test_the_readme_example_runs(runs):
    result = subprocess.run([sys.executable, str(REPO / "examples" / "use_compressor.py"), str(runs[0])],
                            capture_output=True, text=True, timeout=300, cwd=REPO)  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert "equal to the model's: True" in result.stdout
    assert "360 images in" in result.stdout and f"codes (360, {CODE_DIM})" in result.stdout
