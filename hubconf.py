"""torch.hub entrypoints: the authors' DISSL ImageNet releases, and any checkpoint trained with this
plugin or other ResNet trunk weights, as torchvision ResNets returning pooled features (``fc`` is an ``Identity``).

    model = torch.hub.load("<owner>/<repo>", "dissl_resnet50_d8192_e400_m6")  # downloads the weights
    model = torch.hub.load("/path/to/checkout", "from_checkpoint", "run/checkpoint.torch", source="local")
    compressor = torch.hub.load("/path/to/checkout", "compressor", "vic/checkpoint.torch", source="local")
    features = model.eval()(torch.hub.load("<owner>/<repo>", "preprocessor")()(pil_image)[None])

Needs torch and torchvision only (PyYAML for ``from_checkpoint`` of a run folder with a
``train_config.yaml``, and compressai for ``compressor``): :mod:`vissl_issl.hub` imports nothing from
VISSL. Helpers are underscored so that ``torch.hub.list`` shows only entrypoints.
"""

from __future__ import annotations

import torch
import torchvision

# torch.hub puts the checkout first on sys.path while it imports this file.
from vissl_issl import hub as _hub
from vissl_issl import weights as _weights
from vissl_issl.compression.compressor import Compressor as _Compressor

dependencies = ["torch", "torchvision"]

_RELEASE_URL = "https://github.com/YannDubs/Invariant-Self-Supervised-Learning/releases/download/v1.0.0-alpha/{}.torch"


def preprocessor() -> torchvision.transforms.Compose:
    """The releases' evaluation transform: PIL image -> Resize 256 -> CenterCrop 224 -> ToTensor ->
    ImageNet Normalize, i.e. a (3, 224, 224) float tensor."""
    return torchvision.transforms.Compose(
        [
            torchvision.transforms.Resize(256),
            torchvision.transforms.CenterCrop(224),
            torchvision.transforms.ToTensor(),
            torchvision.transforms.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225]),
        ]
    )


def _dissl(name: str, pretrained: bool, weights: str | None, torchvision_kwargs: dict) -> torch.nn.Module:
    if weights is not None and not pretrained:
        raise ValueError(f"{name}: weights={weights!r} given with pretrained=False; pass one or the other.")
    source = weights or _RELEASE_URL.format(name)
    # Read before building, so that an unreachable or malformed file fails fast.
    state = _hub.read_weights_file(source) if pretrained else None
    model = _hub.build_resnet(_hub.release_arch(name), **torchvision_kwargs)
    if state is not None:
        _hub.load_weights(model, state, source)
    return model


def _release_entrypoint(name: str, resizer: bool, epochs: int, crops: str, top1: float):
    def entrypoint(pretrained: bool = True, weights: str | None = None, **torchvision_kwargs) -> torch.nn.Module:
        return _dissl(name, pretrained, weights, torchvision_kwargs)

    dim = 8192 if resizer else 2048
    pool = "avgpool = Sequential(resizer 2048->512->8192, pool) and " if resizer else ""
    entrypoint.__name__ = entrypoint.__qualname__ = name
    entrypoint.__doc__ = (
        f"DISSL ResNet-50, d = {dim}, {epochs} epochs, {crops} crops (authors' linear top-1 {top1}).\n"
        f"    Returns torchvision's resnet50 with {pool}fc = Identity: (N, 3, 224, 224) -> (N, {dim}).\n"
        "    ``weights``: a URL or local file in place of the release; ``torchvision_kwargs`` go to\n"
        "    torchvision's ResNet."
    )
    return entrypoint


for _name, _release in _hub.RELEASES.items():
    globals()[_name] = _release_entrypoint(_name, *_release)


def from_checkpoint(path: str, maxpool: bool | None = None) -> torch.nn.Module:
    """Any ResNet trunk weights as a torchvision ResNet with fc = Identity, weights loaded:
    (N, 3, H, W) -> (N, d), d = 2048 (ResNet-50+), 512 (ResNet-18/34) or the resizer's OUT_DIM.
    ``path``: a VISSL checkpoint (this plugin's, or of VISSL's own resnet trunk), a VISSL trunk,
    release or torchvision state dict, or ``hub:<release>:<local file>`` (vissl_issl/weights.py).
    The architecture comes from a VISSL checkpoint folder's train_config.yaml when there is one,
    else from the weight shapes, with ``maxpool`` (default True) saying whether the stem had a
    maxpool."""
    return _weights.load_trunk(path, maxpool)[0]


def compressor(path: str, trunk: str | None = None, resize: int | None = None, crop: int | None = None) -> _Compressor:
    """A compressor trained with this plugin (VIC, BINCE, a feature compressor) from a local
    checkpoint with its train_config.yaml: ``compress(images) -> list[bytes]``,
    ``decompress(records) -> z_hat``, ``compress_dataset`` / ``decompress_dataset``, ``rate(images)``;
    ``compressor.preprocess`` turns a PIL image into the model's input. ``trunk``: other weights for
    the trunk (e.g. the frozen trunk of a feature compressor); ``resize``/``crop`` go in
    ``preprocess``. Nothing is downloaded."""
    return _Compressor.from_checkpoint(path, trunk=trunk, resize=resize, crop=crop)
