"""A trained compressor as an object: images -> entropy-coded bytes -> codes, without VISSL.

    compressor = Compressor.from_checkpoint("run/checkpoint.torch")          # VIC, BINCE, feature compressor
    compressor = Compressor.from_checkpoint("fc/checkpoint.torch", trunk="dissl/checkpoint.torch")
    records = compressor.compress(compressor.preprocess(images))             # list of bytes, one per image
    z_hat = compressor.decompress(records)                                    # (N, D): the eval forward's codes
    compressor.compress_dataset(dataset, "codes.bin"); z_hat = compressor.decompress_dataset("codes.bin")

The model is the pretraining one with its heads after the bottleneck dropped::

    images (N, 3, H, W), normalised -> trunk (torchvision ResNet, pooled, d) -> EntropyBottleneck -> z_hat (N, D)

The trunk and the bottleneck come from a checkpoint of this plugin (``MODEL.HEAD.PARAMS`` starting
with ``entropy_bottleneck``, the layout of every shipped compressor recipe) and the
``train_config.yaml`` beside it; ``trunk=`` takes the trunk from other weights instead (any spec of
:mod:`vissl_issl.weights`), e.g. the frozen trunk a feature compressor was trained over.
:attr:`Compressor.preprocess` is the pretraining's ``Normalize`` after ``ToTensor`` (with an
optional resize and centre crop), so PIL images go in as the model saw them.

Containers are :mod:`vissl_issl.compression.bitstream` files whose meta names the coder by a
SHA-256 of its state: ``tools/compress.py`` and this class read each other's files, and a file
coded by another coder is refused instead of decoded into wrong codes.
"""

import hashlib
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import torch
import torchvision.transforms as T
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from vissl_issl.checkpoints import CheckpointError, read_vissl_model, train_config_path
from vissl_issl.compression.bitstream import ContainerSize, PathLike, read_container, write_records
from vissl_issl.maths.entropy_bottleneck import EntropyBottleneck
from vissl_issl.weights import load_trunk

CONTAINER_FORMAT = "vissl_issl entropy-coded codes"
BOTTLENECK_HEAD = "entropy_bottleneck"
Batch = Union[Tensor, Sequence[Any]]


def coder_fingerprint(bottleneck: nn.Module) -> str:
    """SHA-256 of the bottleneck's state (parameters and updated coder tables): decoding needs
    exactly this state."""
    digest = hashlib.sha256()
    for key, value in sorted(bottleneck.state_dict().items()):
        digest.update(key.encode())
        digest.update(value.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def read_train_config(checkpoint: PathLike) -> Dict[str, Any]:
    import yaml

    path = train_config_path(checkpoint)
    if not path.is_file():
        raise CheckpointError(f"{checkpoint}: no {path.name} beside it; a compressor is built from its run's config.")
    with open(path) as file:
        return yaml.safe_load(file)


def bottleneck_options(config: Mapping[str, Any], source: PathLike) -> Tuple[List[int], str]:
    """``(dims, prior)`` of the config's first head, which must be the ``entropy_bottleneck``."""
    heads = config.get("MODEL", {}).get("HEAD", {}).get("PARAMS") or []
    if heads and heads[0] and isinstance(heads[0][0], (list, tuple)):
        heads = heads[0]  # one list of heads per trunk output: the first output's
    names = [head[0] for head in heads if head]
    if not names or names[0] != BOTTLENECK_HEAD:
        raise CheckpointError(
            f"{source}: MODEL.HEAD.PARAMS heads are {names}; the compressor API needs {BOTTLENECK_HEAD!r} as the "
            "first head, on the trunk's pooled features (tools/compress.py codes any layout through VISSL)."
        )
    options = heads[0][1]
    return list(options["dims"]), options.get("prior", "factorized")


def bottleneck_state(heads: Mapping[str, Tensor]) -> Dict[str, Tensor]:
    """The first head's entries of a VISSL checkpoint's ``heads`` state (keys ``0.<name>``)."""
    return {key[len("0.") :]: value for key, value in heads.items() if key.startswith("0.")}


def normalization(config: Mapping[str, Any]) -> Optional[T.Normalize]:
    """The first ``Normalize`` of ``DATA.TRAIN.TRANSFORMS`` then ``DATA.TRAIN.DEVICE_TRANSFORMS`` (device-side
    augmentation; also inside VISSL's multi-crop ``transforms`` lists), which the model's inputs went through; None
    if there is none."""

    def find(transforms: Sequence[Mapping[str, Any]]) -> Optional[T.Normalize]:
        for transform in transforms:
            if transform.get("name") == "Normalize":
                return T.Normalize(transform["mean"], transform["std"])
            found = find(transform.get("transforms") or [])
            if found is not None:
                return found
        return None

    train = config.get("DATA", {}).get("TRAIN", {})
    return find([*(train.get("TRANSFORMS") or []), *(train.get("DEVICE_TRANSFORMS") or [])])


def images_of(batch: Batch) -> Tensor:
    """A loader's batch of images, or of ``(images, labels, ...)``."""
    return batch if torch.is_tensor(batch) else batch[0]


class Compressor(nn.Module):
    """``trunk`` maps normalised images ``(N, 3, H, W)`` to features ``(N, d)``; ``bottleneck``
    codes them. Both run in evaluation mode, fp32, without gradients."""

    def __init__(self, trunk: nn.Module, bottleneck: EntropyBottleneck, preprocess: T.Compose, source: str = ""):
        super().__init__()
        self.trunk = trunk.eval()
        self.bottleneck = bottleneck.eval()
        self.preprocess = preprocess
        self.source = source
        self.bottleneck.update()

    @classmethod
    def from_checkpoint(
        cls, checkpoint: PathLike, trunk: Optional[str] = None, resize: Optional[int] = None, crop: Optional[int] = None
    ) -> "Compressor":
        """The compressor of a plugin checkpoint (see the module docstring); ``trunk`` replaces the
        checkpoint's trunk with other weights; ``resize``/``crop`` go before ``ToTensor`` in
        :attr:`preprocess`."""
        config = read_train_config(checkpoint)
        dims, prior = bottleneck_options(config, checkpoint)
        bottleneck = EntropyBottleneck(*dims, prior=prior)
        state = bottleneck_state(read_vissl_model(checkpoint).heads)
        missing, unexpected = bottleneck.load_state_dict(state, strict=False)
        if missing or unexpected:
            raise CheckpointError(
                f"{checkpoint}: its first head does not fit entropy_bottleneck(dims={dims}, prior={prior!r}) "
                f"(missing {missing}, unexpected {unexpected})"
            )
        model, weights = load_trunk(str(trunk or checkpoint))
        if weights.arch.feature_dim != dims[0]:
            raise CheckpointError(
                f"the trunk of {trunk or checkpoint} gives {weights.arch.feature_dim}-d features; the bottleneck of "
                f"{checkpoint} takes {dims[0]}"
            )
        steps = [T.Resize(resize)] if resize else []
        steps += [T.CenterCrop(crop)] if crop else []
        steps += [T.ToTensor(), *filter(None, [normalization(config)])]
        return cls(model, bottleneck, T.Compose(steps), source=str(Path(checkpoint).resolve()))

    @property
    def z_dim(self) -> int:
        return self.bottleneck.z_dim

    def _features(self, images: Tensor) -> Tensor:
        if images.ndim != 4:
            raise ValueError(f"images of shape {tuple(images.shape)}; expected (N, C, H, W) preprocessed tensors")
        device = next(self.parameters()).device
        return self.trunk(images.to(device, torch.float32))

    @torch.no_grad()
    def forward(self, images: Tensor) -> Tuple[Tensor, Tensor, Tensor]:
        """``z_hat`` ``(N, D)``, ``z`` ``(N, D)``, estimated ``bits`` ``(N,)`` of the evaluation forward."""
        self.eval()
        return self.bottleneck(self._features(images))

    @torch.no_grad()
    def compress(self, images: Tensor) -> List[bytes]:
        """``(N, 3, H, W)`` preprocessed images -> N entropy-coded records."""
        self.eval()
        return self.bottleneck.compress(self._features(images))

    @torch.no_grad()
    def decompress(self, records: Sequence[bytes]) -> Tensor:
        """Records -> ``z_hat`` ``(N, D)``, fp32: the evaluation forward's codes of the images."""
        return self.bottleneck.decompress(list(records)).cpu()

    def rate(self, images: Tensor) -> Tensor:
        """Estimated bits ``-log2 q(z_hat)`` per image ``(N,)``; the real cost of an image is
        ``8 * len(record)`` of :meth:`compress`."""
        return self.forward(images)[2].cpu()

    def meta(self) -> Dict[str, Any]:
        return {
            "format": CONTAINER_FORMAT,
            "dtype": "float32",
            "coder": f"{type(self.bottleneck).__module__}.{type(self.bottleneck).__name__}",
            "coder_sha256": coder_fingerprint(self.bottleneck),
            "checkpoint": self.source,
        }

    def compress_dataset(self, dataset: Dataset, path: PathLike, batch_size: int = 256) -> ContainerSize:
        """Every image of ``dataset`` (items: preprocessed image tensors, or tuples starting with
        one), in order, into the container ``path`` (written atomically)."""
        records: List[bytes] = []
        for batch in DataLoader(dataset, batch_size=batch_size):
            records += self.compress(images_of(batch))
        if not records:
            raise ValueError("the dataset is empty")
        return write_records(path, records, (self.z_dim,), self.meta())

    def decompress_dataset(self, path: PathLike, batch_size: int = 256) -> Tensor:
        """The codes ``(N, D)`` of a container written by this coder; any other file raises a
        ``ValueError`` naming it."""
        container = read_container(path)
        if container.meta.get("format") != CONTAINER_FORMAT:
            raise ValueError(f"{path}: not a file of entropy-coded codes (format {container.meta.get('format')!r})")
        if container.meta.get("coder_sha256") != coder_fingerprint(self.bottleneck):
            raise ValueError(
                f"{path} was coded by the coder of {container.meta.get('checkpoint')}; this compressor's "
                f"({self.source}) differs and cannot decode it"
            )
        if tuple(container.shape) != (self.z_dim,):
            raise ValueError(f"{path}: codes of shape {list(container.shape)}; this coder's are [{self.z_dim}]")
        records = container.records
        parts = [self.decompress(records[start : start + batch_size]) for start in range(0, len(records), batch_size)]
        return torch.cat(parts)
