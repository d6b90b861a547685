r"""The lossyless compressors (Dubois et al., "Lossy Compression for Lossless Prediction", NeurIPS
2021; compression_ssl.md §A): VIC, BINCE and the feature ("lossy_Z", CLIP) compressor.

Objective, in the PAPER's convention (``beta`` weighs the distortion), per rank::

    L = w(t) * mean_rows(R) + beta * mean_rows(D) + sum_rows(aux)

* ``R``: the estimated rate of each row's code, ``-log2 q(z_hat)`` in **bits** (the
  ``entropy_bottleneck`` head's ``bits`` column; for BINCE both views are coded and both count,
  so the mean over the 2B rows is the rate of one image).
* ``D``: the distortion in **nats** per row (``vissl_issl.losses.distortion``).
* ``aux``: CompressAI's quantile loss divided by N in every row, so the sum over a rank's rows is
  the aux loss. It only reaches the bottleneck's ``quantiles`` (CompressAI computes it with the
  density detached) and does not depend on the data, so every rank adds the same value and DDP's
  average is that value's gradient.
* ``w(t)``: the rate weight, annealed linearly from 1e-5 to 1 over the first 10% of the
  iterations by :class:`vissl_issl.plugin.hooks.rate_weight_annealing.RateWeightAnnealingHook`.

``beta = lambda / (beta_LL ln 2)`` for the authors' ``lambda`` and code ``beta_LL`` (their rate in nats,
weighted by "1/beta from the paper"): the derivation, the defaults' sources and the deliberate
differences from the authors' code are in ``docs/compressors.md``.
"""

import logging
import math
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import torch

from vissl_issl.architectures.packed_outputs import split_bottleneck, split_decoder, split_projection
from vissl_issl.config import ConfigError, count_crops, fill_or_check, require
from vissl_issl.losses import distortion
from vissl_issl.losses.base import MethodLoss

LN2 = math.log(2)


def paper_beta(authors_lambda: float, authors_beta: float) -> float:
    """The paper's distortion weight for the authors' ``lambda`` (on D, nats) and code ``beta``
    (on R, nats), with our rate in bits: ``lambda / (beta_LL * ln 2)``."""
    return authors_lambda / (authors_beta * LN2)


COMMON_DEFAULTS: Dict[str, Any] = {"rate_weight_start": 1e-5, "rate_anneal_fraction": 0.1}
PROJECTION_HIDDEN_DIM = 128  # LL: FlattenMLP defaults, n_hid_layers=1, hid_dim=128
BOTTLENECK = "entropy_bottleneck"
QUANTILES = "quantiles"


def min_temperature_clamp(logit_scale: torch.Tensor, max_scale: float = 100.0) -> torch.Tensor:
    """``tau = 1 / min(exp(logit_scale), max_scale)`` (CLIP; ``tau >= 1 / max_scale``)."""
    return 1 / torch.clamp(logit_scale.float().exp(), max=max_scale)


def default_projection_dims(z_dim: int) -> List[int]:
    """The authors' BINCE projector sizes: ``out_shape: 0.5`` of ``z_dim``, at least 10."""
    return [int(z_dim), PROJECTION_HIDDEN_DIM, max(10, int(z_dim) // 2)]


def head_chain(config, names: Sequence[str], loss: str) -> List[Dict[str, Any]]:
    """The options of ``MODEL.HEAD.PARAMS``, which must chain exactly the heads ``names``."""
    heads = config.MODEL.HEAD.PARAMS
    got = [head[0] if isinstance(head, (list, tuple)) and head and isinstance(head[0], str) else None for head in heads]
    if got != list(names) or any(len(head) != 2 for head in heads):
        chain = ", ".join(f'["{name}", {{...}}]' for name in names)
        raise ConfigError(f"config.MODEL.HEAD.PARAMS chains {got} but {loss} needs [{chain}]")
    return [head[1] for head in heads]


def bottleneck_code_size(options: Mapping[str, Any], loss: str) -> Tuple[int, int]:
    dims = options.get("dims")
    if not dims or len(dims) != 2:
        raise ConfigError(
            f"config.MODEL.HEAD.PARAMS[0] ({BOTTLENECK}) needs dims [in_dim, z_dim] for {loss}; got {dims}"
        )
    return int(dims[0]), int(dims[1])


def check_constants(key: str, beta: float, rate_weight_start: float, rate_anneal_fraction: float) -> None:
    if not beta > 0:
        raise ConfigError(f"{key}.beta={beta} must be > 0 (the weight of the distortion)")
    if not 0 < rate_weight_start <= 1:
        raise ConfigError(f"{key}.rate_weight_start={rate_weight_start} must be in (0, 1]")
    if not 0 <= rate_anneal_fraction <= 1:
        raise ConfigError(f"{key}.rate_anneal_fraction={rate_anneal_fraction} must be in [0, 1]")


def check_optimizer(config, loss: str) -> None:
    """Refuse layer-wise adaptive rates and keep the coder's ``quantiles`` out of weight decay."""
    optimizer = config.OPTIMIZER
    if optimizer.get("use_larc", False):
        raise ConfigError(
            f"config.OPTIMIZER.use_larc=True but {loss} needs it False: LARC would rescale the updates of the "
            f"entropy bottleneck's {QUANTILES}, which the aux loss trains"
        )
    if optimizer.get("name") == "lars":
        raise ConfigError(
            f"config.OPTIMIZER.name=lars but {loss} needs an optimizer without layer-wise adaptation (adam, "
            f"sgd): LARS would rescale the updates of the entropy bottleneck's {QUANTILES}"
        )
    excluded = list(optimizer.get("non_regularized_parameters") or [])
    if QUANTILES not in excluded:
        optimizer.non_regularized_parameters = excluded + [QUANTILES]


class CompressionLoss(MethodLoss):
    """Base of the compressors: ``beta``, the annealed ``rate_weight`` and the total above.

    Subclasses set ``NAME``, ``DEFAULTS`` (with ``beta``), ``INFERRED`` and ``HEADS``, and define
    ``check_data`` / ``fill_inferred`` for :meth:`infer_config` and :meth:`forward`.

    Common config (``LOSS.<name>``):
        beta (float): the paper's weight of the distortion (> 0).
        rate_weight_start (float): the rate weight at iteration 0 (1e-5; in (0, 1]).
        rate_anneal_fraction (float): fraction of the iterations over which the rate weight rises
            linearly to 1 (0.1; in [0, 1]; 0 disables annealing).
    """

    HEADS: Tuple[str, ...]
    HOOKS = ("rate_weight_annealing",)

    def __init__(self, beta: float, rate_weight_start: float, rate_anneal_fraction: float):
        super().__init__()
        check_constants(self.key(), beta, rate_weight_start, rate_anneal_fraction)
        self.beta = float(beta)
        self.rate_weight_start = float(rate_weight_start)
        self.rate_anneal_fraction = float(rate_anneal_fraction)
        self.rate_weight = 1.0  # set by RateWeightAnnealingHook before every loss

    @classmethod
    def infer(cls, config, block) -> None:
        """Check the optimizer, data and heads around the loss and fill the inferred keys."""
        check_constants(cls.key(), block.beta, block.rate_weight_start, block.rate_anneal_fraction)
        check_optimizer(config, cls.NAME)
        heads = head_chain(config, cls.HEADS, cls.NAME)
        cls.check_data(config)
        cls.fill_inferred(config, block, heads)

    @classmethod
    def check_data(cls, config) -> None:
        raise NotImplementedError

    @classmethod
    def fill_inferred(cls, config, block, heads: List[Dict[str, Any]]) -> None:
        raise NotImplementedError

    def objective(self, bits: torch.Tensor, aux: torch.Tensor, distortions: torch.Tensor) -> torch.Tensor:
        """``w * mean(bits) + beta * mean(distortions) + sum(aux)``, fp32 scalar; ``bits`` and
        ``aux`` ``(N,)`` per code row, ``distortions`` ``(M,)`` per distortion row."""
        with torch.autocast(device_type=bits.device.type, enabled=False):
            rate = bits.float().mean()
            distortion_mean = distortions.float().mean()
            aux_loss = aux.float().sum()
            total = self.rate_weight * rate + self.beta * distortion_mean + aux_loss
        self.record_terms(rate_bits=rate, distortion_nats=distortion_mean, aux=aux_loss)
        return total


# VIC -------------------------------------------------------------------------------------------

LIKELIHOODS = {"gaussian": distortion.gaussian_reconstruction, "bernoulli": distortion.bernoulli_reconstruction}


class VICLoss(CompressionLoss):
    r"""VIC: the code of the augmented image must reconstruct the canonical image.

    ``forward(output, target)``: ``output`` the ``image_decoder`` head's ``(N, C*H*W + 2)``
    ``[logits | bits | aux]`` on the augmented views; ``target`` the canonical images
    ``(N, C, H, W)`` in [0, 1], put in VISSL's label slot by ``augmented_canonical_collator``::

        D_n = sum (sigmoid(logits_n) - x_n)^2        (gaussian; the authors' colour images)
        D_n = sum BCE(logits_n, x_n)                 (bernoulli; the authors' 1-channel images)
        L = w mean_n bits_n + beta mean_n D_n + sum_n aux_n

    Config (``LOSS.vic_loss``; the common keys of :class:`CompressionLoss`):
        beta (float): 1 / (0.1 ln 2) = 14.427 (the authors' lambda 1, beta_LL 0.1).
        likelihood (str): ``gaussian`` or ``bernoulli``; inferred as the authors do from the number
            of channels (1: bernoulli, else gaussian) when left out.
        image_shape (list): ``[C, H, W]``, inferred from the ``image_decoder`` head.
    """

    NAME = "vic_loss"
    DEFAULTS: Dict[str, Any] = {
        "beta": paper_beta(1.0, 0.1),
        "likelihood": None,
        "image_shape": None,
        **COMMON_DEFAULTS,
    }
    INFERRED = ("likelihood", "image_shape")
    HEADS = (BOTTLENECK, "image_decoder")
    COLLATOR = "augmented_canonical_collator"

    def __init__(self, beta, rate_weight_start, rate_anneal_fraction, likelihood: str, image_shape: Sequence[int]):
        super().__init__(beta, rate_weight_start, rate_anneal_fraction)
        if likelihood not in LIKELIHOODS:
            raise ConfigError(f"{self.key('likelihood')}={likelihood} must be one of {sorted(LIKELIHOODS)}")
        if len(image_shape) != 3:
            raise ConfigError(f"{self.key('image_shape')}={image_shape} must be [C, H, W]")
        self.likelihood, self.image_shape = likelihood, [int(s) for s in image_shape]
        self.checked_target_range = False

    @classmethod
    def check_data(cls, config) -> None:
        views = count_crops(config.DATA.TRAIN.TRANSFORMS)
        require(views, 2, "the number of views made by config.DATA.TRAIN.TRANSFORMS (augmented, canonical)", cls.NAME)
        require(config.DATA.TRAIN.COLLATE_FUNCTION, cls.COLLATOR, "config.DATA.TRAIN.COLLATE_FUNCTION", cls.NAME)

    @classmethod
    def fill_inferred(cls, config, block, heads) -> None:
        _, z_dim = bottleneck_code_size(heads[0], cls.NAME)
        decoder = heads[1]
        if decoder.get("z_dim") is None:
            decoder["z_dim"] = z_dim
        elif decoder["z_dim"] != z_dim:
            raise ConfigError(
                f"config.MODEL.HEAD.PARAMS[1] (image_decoder) z_dim={decoder['z_dim']} but the bottleneck's codes have "
                f"z_dim={z_dim} (config.MODEL.HEAD.PARAMS[0] dims[-1])"
            )
        image_shape = decoder.get("image_shape")
        if not image_shape or len(image_shape) != 3:
            raise ConfigError(
                f"config.MODEL.HEAD.PARAMS[1] (image_decoder) needs image_shape [C, H, W]; got {image_shape}"
            )
        fill_or_check(block, cls.key(), "image_shape", list(image_shape), "config.MODEL.HEAD.PARAMS[1] image_shape")
        if block.likelihood is None:
            block.likelihood = "bernoulli" if image_shape[0] == 1 else "gaussian"
        if block.likelihood not in LIKELIHOODS:
            raise ConfigError(f"{cls.key('likelihood')}={block.likelihood} must be one of {sorted(LIKELIHOODS)}")

    def forward(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        decoded = split_decoder(output, self.image_shape)
        if not torch.is_tensor(target) or target.shape != decoded.logits.shape:
            raise ValueError(
                f"{self.NAME} got target of shape {tuple(getattr(target, 'shape', ()))}; expected the canonical images "
                f"{tuple(decoded.logits.shape)} (config.DATA.TRAIN.COLLATE_FUNCTION={self.COLLATOR})"
            )
        if not self.checked_target_range:
            self.check_target_range(target)
        distortions = LIKELIHOODS[self.likelihood](decoded.logits, target)
        return self.objective(decoded.bits, decoded.aux, distortions)

    def check_target_range(self, target: torch.Tensor) -> None:
        # The transforms are the same for every batch, so the first one shows a misconfiguration;
        # checking every step would cost a host synchronisation per step.
        low, high = torch.aminmax(target.detach())
        if low < -1e-6 or high > 1 + 1e-6:
            raise ValueError(
                f"{self.NAME} got canonical images in [{low.item():.3g}, {high.item():.3g}]; expected [0, 1]: "
                "normalise "
                "only the augmented view (e.g. Normalize inside ImgPilMultiCropRandomApply with prob [1.0, 0.0])"
            )
        self.checked_target_range = True


# BINCE -----------------------------------------------------------------------------------------


class BINCELoss(CompressionLoss):
    r"""BINCE: InfoNCE between the projected codes of two augmentations, both compressed.

    ``forward(output, target)``: ``output`` the ``bince_projection`` head's ``(2B, P + 3)``
    ``[projection | bits | aux | logit_scale]``, view-major (VISSL's ``simclr_collator``);
    target ignored::

        tau = 1 / min(exp(logit_scale), 100)       (or the fixed ``temperature``)
        D_k = InfoNCE of anchor k over the 2 B_g - 1 gathered candidates at tau
        L = w mean_k bits_k + beta mean_k D_k + sum_k aux_k          (k over the 2B rows)

    With a fixed temperature, ``mean_k D_k`` is VISSL's ``simclr_info_nce_loss`` on the
    projections (§D.2).

    Config (``LOSS.bince_loss``; the common keys of :class:`CompressionLoss`):
        beta (float): (1 / 0.003) / (0.1 ln 2) = 4808.98 (the authors' lambda 1 / 0.003, beta_LL 0.1).
        temperature (float or null): a fixed temperature; null (default) learns it through the
            head's ``logit_scale``, as the authors (``is_train_temperature: true``).
        embedding_dim (int): the projection size P, inferred from the ``bince_projection`` head.
    """

    NAME = "bince_loss"
    DEFAULTS: Dict[str, Any] = {
        "beta": paper_beta(1 / 0.003, 0.1),
        "temperature": None,
        "embedding_dim": None,
        **COMMON_DEFAULTS,
    }
    INFERRED = ("embedding_dim",)
    HEADS = (BOTTLENECK, "bince_projection")

    def __init__(self, beta, rate_weight_start, rate_anneal_fraction, temperature: Optional[float], embedding_dim: int):
        super().__init__(beta, rate_weight_start, rate_anneal_fraction)
        if temperature is not None and not temperature > 0:
            raise ConfigError(f"{self.key('temperature')}={temperature} must be > 0 or null (learned)")
        self.temperature = None if temperature is None else float(temperature)
        self.embedding_dim = int(embedding_dim)

    @classmethod
    def check_data(cls, config) -> None:
        views = count_crops(config.DATA.TRAIN.TRANSFORMS)
        require(views, 2, "the number of views made by config.DATA.TRAIN.TRANSFORMS", cls.NAME)
        require(config.DATA.TRAIN.COLLATE_FUNCTION, "simclr_collator", "config.DATA.TRAIN.COLLATE_FUNCTION", cls.NAME)

    @classmethod
    def fill_inferred(cls, config, block, heads) -> None:
        _, z_dim = bottleneck_code_size(heads[0], cls.NAME)
        projection = heads[1]
        if projection.get("dims") is None:
            projection["dims"] = default_projection_dims(z_dim)
        dims = projection["dims"]
        if len(dims) != 3 or dims[0] != z_dim:
            raise ConfigError(
                f"config.MODEL.HEAD.PARAMS[1] (bince_projection) dims={list(dims)} must be [z_dim, hidden, P] with "
                f"z_dim={z_dim}, the bottleneck's code size (config.MODEL.HEAD.PARAMS[0] dims[-1])"
            )
        fill_or_check(block, cls.key(), "embedding_dim", int(dims[-1]), "config.MODEL.HEAD.PARAMS[1] dims[-1]")

    def current_temperature(self, logit_scale: torch.Tensor) -> torch.Tensor:
        if self.temperature is not None:
            return torch.tensor(self.temperature, device=logit_scale.device)
        return min_temperature_clamp(logit_scale)

    def forward(self, output: torch.Tensor, target: Any = None) -> torch.Tensor:
        projected = split_projection(output)
        if projected.projection.shape[1] != self.embedding_dim:
            raise ValueError(
                f"{self.NAME} got projections of size {projected.projection.shape[1]}; expected embedding_dim="
                f"{self.embedding_dim}"
            )
        temperature = self.current_temperature(projected.logit_scale)
        distortions = distortion.info_nce(projected.projection, temperature)
        loss = self.objective(projected.bits, projected.aux, distortions)
        self.last_terms["temperature"] = temperature.detach()
        return loss


# the feature ("lossy_Z", CLIP) compressor ------------------------------------------------------


class FeatureCompressionLoss(CompressionLoss):
    r"""The authors' CLIP compressor with any frozen trunk: code the trunk's features so that
    they can be recovered in L1.

    ``forward(output, target)``: ``output`` the ``entropy_bottleneck`` head's ``(N, 2D + 2)``
    ``[z_hat | z | bits | aux]`` (with ``dims [d, d]`` so that ``z`` is the trunk's features);
    target ignored::

        D_n = ||z_hat_n - z_n||_1
        L = w mean_n bits_n + beta mean_n D_n + sum_n aux_n

    Freezing the trunk is the config's job: VISSL's feature-evaluation mode
    (``MODEL.FEATURE_EVAL_SETTINGS.EVAL_MODE_ON`` and ``FREEZE_TRUNK_ONLY``: no gradients, BatchNorm
    statistics kept, weights from ``MODEL.WEIGHTS_INIT``; ``pretrain/feature_compressor/parts``) or
    ``MODEL.NON_TRAINABLE_PARAMS``; a warning is logged when nothing is frozen.

    Config (``LOSS.feature_compression_loss``; the common keys of :class:`CompressionLoss`):
        beta (float): 1 / (0.05 ln 2) = 28.854 (the authors' lambda 1, beta_LL 5e-2).
    """

    NAME = "feature_compression_loss"
    DEFAULTS: Dict[str, Any] = {"beta": paper_beta(1.0, 0.05), **COMMON_DEFAULTS}
    HEADS = (BOTTLENECK,)

    @classmethod
    def check_data(cls, config) -> None:
        views = count_crops(config.DATA.TRAIN.TRANSFORMS)
        require(views, 1, "the number of views made by config.DATA.TRAIN.TRANSFORMS", cls.NAME)

    @classmethod
    def fill_inferred(cls, config, block, heads) -> None:
        bottleneck_code_size(heads[0], cls.NAME)
        evaluation = config.MODEL.FEATURE_EVAL_SETTINGS
        if not (evaluation.EVAL_MODE_ON and evaluation.FREEZE_TRUNK_ONLY) and not config.MODEL.get(
            "NON_TRAINABLE_PARAMS"
        ):
            logging.warning(
                f"{cls.NAME}: neither config.MODEL.FEATURE_EVAL_SETTINGS.FREEZE_TRUNK_ONLY nor "
                "config.MODEL.NON_TRAINABLE_PARAMS freezes the trunk, so it trains too; the authors' compressor "
                "codes the features of a frozen trunk"
            )

    def forward(self, output: torch.Tensor, target: Any = None) -> torch.Tensor:
        coded = split_bottleneck(output)
        distortions = distortion.feature_l1(coded.z_hat, coded.z)
        return self.objective(coded.bits.reshape(-1), coded.aux.reshape(-1), distortions)
