"""The VAE digits recipe (the lossyless non-invariant baseline, compression_ssl.md §A.3) against the VIC
recipe it composes, its target (the input un-normalised), and ``tools/vic_vs_vae.py`` on a tiny
budget."""

import json
import math

import vissl_issl.plugin  # noqa: F401  (shims + registration)
from vissl_issl.plugin.launcher import compose

import pytest
import torch
import torchvision.transforms as T
from vissl.data.collators import get_collator
from vissl.data.ssl_transforms import get_transform

from vissl_issl.evaluation.probe import DigitsSplit
from vissl_issl.losses.compression import VICLoss, paper_beta

VIC_DIGITS = "pretrain/vic/vic_resnet18_digits"
VAE_DIGITS = "pretrain/vic/vae_resnet18_digits"
NORMALIZE = {"name": "Normalize", "mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5]}


def test_vae_recipe_is_the_vic_recipe_with_the_input_as_target_and_twice_the_distortion_weight():
    vic, vae = (compose([f"config={name}"])[1] for name in (VIC_DIGITS, VAE_DIGITS))
    # The authors' VAE: lambda = 1 / factor_beta = 2, VIC's lambda 1, both code beta 0.1.
    assert vae.LOSS.vic_loss.beta == pytest.approx(paper_beta(1 / 0.5, 0.1)) == pytest.approx(2 / (0.1 * math.log(2)))
    assert vae.LOSS.vic_loss.beta == pytest.approx(2 * VICLoss.DEFAULTS["beta"])
    assert vic.LOSS.vic_loss.beta == pytest.approx(VICLoss.DEFAULTS["beta"])
    # The crop comes before the copies (both views the same crop); only view 0 is normalised.
    crop = {"name": "RandomResizedCrop", "size": 16, "scale": [0.6, 1.0]}
    assert vic.DATA.TRAIN.TRANSFORMS[1]["transforms"] == [crop]
    assert vae.DATA.TRAIN.TRANSFORMS == [
        crop,
        {"name": "ImgReplicatePil", "num_times": 2},
        {"name": "ToTensor"},
        {"name": "ImgPilMultiCropRandomApply", "transforms": [NORMALIZE], "prob": [1.0, 0.0]},
    ]
    assert vae.CHECKPOINT.DIR != vic.CHECKPOINT.DIR
    # Nothing else differs.
    for config in (vic, vae):
        config.DATA.TRAIN.pop("TRANSFORMS"), config.LOSS.vic_loss.pop("beta"), config.CHECKPOINT.pop("DIR")
    assert vae == vic


def test_vae_target_is_its_input_unnormalised():
    config = compose([f"config={VAE_DIGITS}"])[1]
    transform = get_transform(config.DATA.TRAIN.TRANSFORMS)
    split = DigitsSplit("test", T.ToTensor())
    torch.manual_seed(0)
    samples = [
        transform({"data": [split.digits[i][0]], "label": [0], "data_valid": [True], "data_idx": [i]}) for i in range(8)
    ]
    batch = get_collator(config.DATA.TRAIN.COLLATE_FUNCTION, {})(samples)
    (inputs,), (targets,) = batch["data"], batch["label"]
    assert inputs.shape == targets.shape == (8, 3, 16, 16)
    assert 0 <= targets.min() and targets.max() <= 1 and inputs.min() < 0
    torch.testing.assert_close(targets, inputs * 0.5 + 0.5)
    # The target is the crop, not the canonical digit (as VIC's would be).
    canonical = torch.stack([split[i][0] for i in range(8)])
    assert (targets - canonical).abs().amax(dim=(1, 2, 3)).max() > 0.1


@pytest.mark.slow
def test_tool_trains_both_and_writes_the_figure_and_finite_numbers(tmp_path):
    import vic_vs_vae

    figure = tmp_path / "docs" / "digits_vic_vae.png"
    tiny = ["config.DATA.TRAIN.DATA_LIMIT=32", "config.DATA.TRAIN.BATCHSIZE_PER_REPLICA=16"]
    argv = ["--epochs", "1", "--out", str(tmp_path / "runs"), "--figure", str(figure), "--columns", "4", *tiny]
    numbers = vic_vs_vae.main(argv)
    assert figure.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert json.loads(figure.with_suffix(".json").read_text()) == json.loads(json.dumps(numbers))
    assert numbers["epochs"] == {"vic": 1, "vae": 1} and set(numbers["models"]) == {"vic", "vae"}
    for values in numbers["models"].values():
        for key in ("real_bits", "estimated_bits", "mse_vs_canonical", "mse_vs_input"):
            assert math.isfinite(values[key]) and values[key] >= 0
        assert values["real_bits"] > 0 and len(values["traversal_dims"]) == 2
    for model in ("vic", "vae"):
        assert (tmp_path / "runs" / model / "model_final_checkpoint_phase0.torch").is_file()
