"""vissl_issl/weights.py: every weights format a user may hold (a VISSL checkpoint of this plugin or
of VISSL's own resnet trunk, a VISSL trunk, torchvision or release state dict, a hub release entrypoint
with a local file) gives the features of the plugin checkpoint it was converted from, converts back
to that checkpoint's VISSL trunk, feeds the feature compressor's frozen trunk and the probe's CLI; a
file that does not fit fails once, naming the keys. Checkpoints are written without training
(tests/test_hub.py's fake runs)."""

import json
import re
from pathlib import Path
from typing import Dict

import vissl_issl.plugin  # noqa: F401  (registers the plugin's trunks)
from vissl_issl.plugin.launcher import INIT_WEIGHTS_NAME, compose

import pytest
import torch
from test_hub import TV18, VisslRun, hub_load, vissl_checkpoint, vissl_run
from vissl.models import build_model

from conftest import REPO, run_tool
from vissl_issl import hub, weights
from vissl_issl.checkpoints import CheckpointError
from vissl_issl.evaluation import probe
from vissl_issl.evaluation.features import sidecar_path

RESIZER = "tv_resnet18_resizer_d128"  # digits ResNet-18 (small-image stem, maxpool) + resizer 512->512->128
VISSL_RESNET50 = "resnet_d2048"  # VISSL's own resnet trunk, depth 50: the release dNone architecture
VISSL_RESNET50_CONFIG = "pretrain/dissl/dissl_resnet50_dNone_e100_m2"
FEATURE_DIGITS = "pretrain/feature_compressor/feature_compressor_dissl_resnet18_digits"
# The same eval-mode forward over the same weights: the layouts differ only in key names.
TOLERANCE = 1e-5


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # 2 shared cores (see tests/test_hub.py)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def runs_root(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("runs")


def write_formats(run: VisslRun, folder: Path) -> Dict[str, Path]:
    """The trunk of ``run``'s plugin checkpoint converted to every other file format, each in a
    folder of its own (no train_config.yaml beside it)."""
    vissl_trunk = hub.read_vissl_trunk(run.checkpoint)
    torchvision_state = weights.read_weights(str(run.checkpoint)).state
    classifier = {"fc.weight": torch.randn(10, run.arch.feature_dim), "fc.bias": torch.randn(10)}
    contents = {
        "VISSL checkpoint": vissl_checkpoint(vissl_trunk, {}),
        "VISSL trunk": vissl_trunk,
        "release": hub.torchvision_to_release(torchvision_state),
        "torchvision": {**torchvision_state, **classifier},  # a classifier on top is dropped
    }
    files = {}
    for layout, content in contents.items():
        files[layout] = folder / layout.replace(" ", "_") / "weights.torch"
        files[layout].parent.mkdir(parents=True)
        torch.save(content, files[layout])
    return files


def features(model: torch.nn.Module, run: VisslRun) -> torch.Tensor:
    with torch.no_grad():
        return model.eval()(run.inputs)


@pytest.mark.slow
def test_every_format_gives_the_plugin_checkpoint_features_and_converts_back(runs_root, tmp_path):
    run = vissl_run(RESIZER, runs_root)
    model, plugin = weights.load_trunk(str(run.checkpoint))
    assert (plugin.layout, plugin.arch) == ("VISSL checkpoint", run.arch)  # from its train_config.yaml
    torch.testing.assert_close(features(model, run), run.features, atol=TOLERANCE, rtol=0)

    vissl_trunk = hub.read_vissl_trunk(run.checkpoint)
    for layout, file in write_formats(run, tmp_path).items():
        model, loaded = weights.load_trunk(str(file))
        assert (loaded.layout, loaded.arch) == (layout, run.arch), layout  # inferred from the shapes
        torch.testing.assert_close(features(model, run), run.features, atol=TOLERANCE, rtol=0, msg=layout)
        # ... and back: the VISSL trunk the checkpoint holds, bit for bit.
        back = weights.vissl_trunk_state(str(file))
        assert back.keys() == vissl_trunk.keys(), layout
        assert all(torch.equal(back[key], value) for key, value in vissl_trunk.items()), layout


@pytest.mark.slow
def test_hub_release_with_local_weights_and_vissl_resnet_trunk(runs_root, tmp_path):
    run = vissl_run(VISSL_RESNET50, runs_root)  # VISSL's own resnet trunk: a model-zoo checkpoint's
    torchvision_file = write_formats(run, tmp_path)["torchvision"]
    spec = f"hub:dissl_resnet50_dNone_e100_m2:{torchvision_file}"
    model, loaded = weights.load_trunk(spec)
    assert loaded.arch == hub.release_arch("dissl_resnet50_dNone_e100_m2") == run.arch
    torch.testing.assert_close(features(model, run), run.features, atol=TOLERANCE, rtol=0)
    # The same through torch.hub: from_checkpoint takes every format.
    torch.testing.assert_close(features(hub_load("from_checkpoint", spec), run), run.features, atol=TOLERANCE, rtol=0)
    # A VISSL checkpoint's trunk as stored, for VISSL's resnet trunk built from the config.
    config = compose([f"config={VISSL_RESNET50_CONFIG}"])[1]
    trunk = build_model(config.MODEL, config.OPTIMIZER).trunk
    trunk.load_state_dict(weights.vissl_trunk_state(spec))
    with torch.no_grad():
        torch.testing.assert_close(trunk.eval()(run.inputs, [])[0], run.features, atol=TOLERANCE, rtol=0)


@pytest.mark.slow
def test_weights_that_do_not_fit_fail_once_naming_the_keys(runs_root, tmp_path):
    run = vissl_run(RESIZER, runs_root)
    file = write_formats(run, tmp_path)["torchvision"]
    state = torch.load(file, weights_only=True)
    del state["layer2.0.bn1.running_mean"]
    state["layer2.0.extra.weight"] = torch.zeros(1)
    torch.save(state, file)
    with pytest.raises(CheckpointError) as error:
        weights.load_trunk(str(file))
    message = str(error.value)
    assert str(file) in message
    assert "missing keys layer2.0.bn1.running_mean" in message and "unexpected keys layer2.0.extra.weight" in message

    # A ResNet-18 for a ResNet-50 release: one error listing the keys.
    with pytest.raises(CheckpointError, match=r"missing keys .*layer1\.0\.conv3\.weight"):
        weights.load_trunk(f"hub:dissl_resnet50_dNone_e100_m2:{run.checkpoint}")


def test_hub_specs_never_download_and_name_a_release(tmp_path):
    with pytest.raises(CheckpointError, match="nothing is downloaded"):
        weights.parse_spec("hub:dissl_resnet50_dNone_e100_m2:https://example.com/w.torch")
    with pytest.raises(CheckpointError, match="'dissl_resnet99' is not a release entrypoint"):
        weights.parse_spec(f"hub:dissl_resnet99:{tmp_path / 'w.torch'}")
    with pytest.raises(CheckpointError, match="hub:<release>:<local file>"):
        weights.parse_spec("hub:dissl_resnet50_dNone_e100_m2")


@pytest.mark.slow
def test_feature_compressor_trunk_takes_a_torchvision_file(runs_root, tmp_path):
    run = vissl_run(TV18, runs_root)  # the digits ResNet-18 without resizer: the compressor's trunk
    files = write_formats(run, tmp_path / "formats")
    out = tmp_path / "compressor"
    overrides = [f"config={FEATURE_DIGITS}", f"config.CHECKPOINT.DIR={out}"]
    _, config = compose([*overrides, f"config.MODEL.WEIGHTS_INIT.PARAMS_FILE={files['torchvision']}"], True)
    assert config.MODEL.WEIGHTS_INIT.PARAMS_FILE == str(out / INIT_WEIGHTS_NAME)
    dumped = (out / "train_config.yaml").read_text()
    assert str(out / INIT_WEIGHTS_NAME) in dumped

    # VISSL's own weight loading, as its train task runs it.
    model = build_model(config.MODEL, config.OPTIMIZER)
    model.init_model_from_weights_params_file(config, torch.load(out / INIT_WEIGHTS_NAME, weights_only=True))
    trunk = {key.removeprefix("base_model."): value for key, value in model.trunk.state_dict().items()}
    for key, value in hub.read_vissl_trunk(run.checkpoint).items():
        if not key.endswith("num_batches_tracked"):  # a counter VISSL's weight loading skips on purpose
            assert torch.equal(trunk[key], value), key

    # A plugin checkpoint is left to VISSL; weights of another trunk fail naming the keys.
    _, config = compose([*overrides, f"config.MODEL.WEIGHTS_INIT.PARAMS_FILE={run.checkpoint}"], True)
    assert config.MODEL.WEIGHTS_INIT.PARAMS_FILE == str(run.checkpoint)
    resizer_file = write_formats(vissl_run(RESIZER, runs_root), tmp_path / "resizer")["release"]
    with pytest.raises(CheckpointError, match=r"unexpected keys avgpool\.0\.conv1\.weight"):
        compose([*overrides, f"config.MODEL.WEIGHTS_INIT.PARAMS_FILE={resizer_file}"], True)


@pytest.mark.slow
def test_probe_loads_any_format_into_a_config_trunk_or_its_own(runs_root, tmp_path):
    run = vissl_run(RESIZER, runs_root)
    files = write_formats(run, tmp_path)
    overrides = ["+config.MODEL.TRUNK.TV_RESNET.RESIZER={HIDDEN_DIM:512,OUT_DIM:128}"]
    config, _ = probe.load_config(str(files["release"]), "pretrain/dissl/dissl_resnet18_digits", overrides)
    trunk = probe.build_trunk(str(files["release"]), config)
    with torch.no_grad():
        torch.testing.assert_close(trunk.eval()(run.inputs, [])[0], run.features, atol=TOLERANCE, rtol=0)

    config, source = probe.load_config(str(files["torchvision"]), None, [])
    assert source == {"weights_only": True} and "MODEL" not in config
    torch.testing.assert_close(
        features(probe.build_trunk(str(files["torchvision"]), config), run), run.features, atol=TOLERANCE, rtol=0
    )
    # The resizer's weights into the digits recipe's trunk, which has none.
    config, _ = probe.load_config(str(files["release"]), "pretrain/dissl/dissl_resnet18_digits", [])
    message = f"--checkpoint: {files['release']}: its trunk does not fit .*unexpected keys _feature_blocks.resizer."
    with pytest.raises(SystemExit, match=re.escape(message).replace(re.escape(".*"), ".*")):
        probe.build_trunk(str(files["release"]), config)


@pytest.mark.slow
def test_probe_tool_on_a_torchvision_state_dict(runs_root, tmp_path):
    run = vissl_run(RESIZER, runs_root)
    file = write_formats(run, tmp_path)["torchvision"]
    features_dir = tmp_path / "features"
    command = [
        REPO / "tools" / "probe.py", "--checkpoint", str(file), "--data", "digits", "--features-dir", str(features_dir),
        "--epochs", "1", "--lrs", "0.3", "--wds", "1e-6", "--ks", "5", "--workers", "0",
    ]  # fmt: skip
    result = run_tool(command, tmp_path, OMP_NUM_THREADS="1")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "the architecture comes from the weights" in result.stderr
    results = json.loads((features_dir / "results.json").read_text())
    assert results["dim"] == 128 and results["knn"]["5"]["top1"] > 50.0
    producer = json.loads(sidecar_path(features_dir, "test").read_text())["producer"]
    assert producer["trunk"] == {**weights.identity(str(file)), "config": {"weights_only": True}}
    assert "Normalize(mean=[0.485, 0.456, 0.406]" in producer["transform"]  # ImageNet's, without a config
