"""W-MSE: whitening-based self-supervision (Ermolov, Siarohin, Sangineto, Sebe, ICML 2021)."""

import itertools
from typing import Any

import torch
import torch.nn.functional as F

from vissl_issl.config import ConfigError, count_crops, fill_or_check, head_modules, head_output_dim, require
from vissl_issl.losses.base import MethodLoss
from vissl_issl.maths.whitening import whiten

NAME = "w_mse_loss"
KEY = f"config.LOSS.{NAME}"


def check_group_size(w_size: int, embedding_dim: int, w_eps: float) -> None:
    if w_size <= embedding_dim and not w_eps:
        raise ConfigError(
            f"{KEY}.w_size={w_size} must exceed embedding_dim={embedding_dim}: a group of w_size "
            "embeddings has a singular covariance otherwise (the authors use w_size = 2 * embedding_dim; "
            f"or shrink it with {KEY}.w_eps > 0)"
        )


def view_distance(a: torch.Tensor, b: torch.Tensor, normalize: bool) -> torch.Tensor:
    """Mean over samples of ``2 - 2 cos(a, b)`` (``normalize``) or of ``F.mse_loss``'s squared error."""
    if normalize:
        return (2 - 2 * F.cosine_similarity(a, b, dim=-1)).mean()
    return F.mse_loss(a, b)


class WMSELoss(MethodLoss):
    r"""W-MSE: whiten each view's embeddings per random sub-batch, then pull the views together.

    With ``num_samples`` views of ``B`` images, for each of ``w_iter`` random partitions of the
    images into groups of ``w_size``, every view's embeddings are whitened per group
    (:func:`vissl_issl.maths.whitening.whiten`; the same partition for every view) and::

        L = mean_{iterations} mean_{views k < l} mean_n d(z^k_n, z^l_n)
        d(a, b) = 2 - 2 cos(a, b)  (normalize)   or   ||a - b||^2 / embedding_dim  (not normalize)

    No negatives, predictor or EMA. Under DDP each rank whitens its own (local) batch, as the
    authors' single-GPU code whitens its batch: groups never span ranks, so the loss averaged over
    ranks equals one process averaging the per-rank losses, and the local batch must be a multiple
    of ``w_size``. Whitening is fp32 whatever the AMP setting.

    ``forward(output, target)``: ``output`` ``(num_samples * B, embedding_dim)``, view-major (all
    images of view 0, then view 1, ...: VISSL's ``simclr_collator``); target ignored; fp32 scalar.

    Config (``LOSS.w_mse_loss``):
        w_size (int): images per whitening group (128); must exceed embedding_dim unless w_eps > 0.
        w_iter (int): random partitions per step, averaged (1).
        w_eps (float): covariance shrinkage towards I, (1 - eps) S + eps I (0).
        normalize (bool): 2 - 2 cos after whitening (True) or plain MSE (False).
        num_samples (int): views per image; inferred from DATA.TRAIN.TRANSFORMS.
        embedding_dim (int): inferred from the head's output size.
    """

    NAME = NAME
    DEFAULTS = {
        "w_size": 128,
        "w_iter": 1,
        "w_eps": 0.0,
        "normalize": True,
        "num_samples": None,
        "embedding_dim": None,
    }
    INFERRED = ("num_samples", "embedding_dim")
    # Each rank whitens its own batch: DROP_LAST is required on any number of processes (infer).
    EQUAL_BATCHES = False

    def __init__(self, w_size: int, w_iter: int, w_eps: float, normalize: bool, num_samples: int, embedding_dim: int):
        super().__init__()
        check_group_size(w_size, embedding_dim, w_eps)
        if w_iter < 1 or num_samples < 2 or not 0 <= w_eps < 1:
            raise ConfigError(
                f"{KEY}: w_iter={w_iter} must be >= 1, num_samples={num_samples} >= 2 and w_eps={w_eps} in [0, 1)"
            )
        self.w_size, self.w_iter, self.w_eps, self.normalize = w_size, w_iter, w_eps, normalize
        self.num_samples, self.embedding_dim = num_samples, embedding_dim

    @classmethod
    def infer(cls, config, block) -> None:
        """Fill ``num_samples``/``embedding_dim`` and check that every local batch splits into groups."""
        fill_or_check(
            block, KEY, "num_samples", count_crops(config.DATA.TRAIN.TRANSFORMS), "config.DATA.TRAIN.TRANSFORMS"
        )
        heads = config.MODEL.HEAD.PARAMS
        head = heads if isinstance(heads[0][0], str) else heads[-1]
        fill_or_check(block, KEY, "embedding_dim", head_output_dim(head_modules(head)), "config.MODEL.HEAD.PARAMS")
        check_group_size(block.w_size, block.embedding_dim, block.w_eps)
        batch = config.DATA.TRAIN.BATCHSIZE_PER_REPLICA
        if batch % block.w_size:
            raise ConfigError(
                f"config.DATA.TRAIN.BATCHSIZE_PER_REPLICA={batch} must be a multiple of {KEY}.w_size={block.w_size}: "
                "each rank whitens its own batch in groups of w_size"
            )
        require(config.DATA.TRAIN.DROP_LAST, True, "config.DATA.TRAIN.DROP_LAST", NAME)

    def forward(self, output: torch.Tensor, target: Any = None) -> torch.Tensor:
        rows, dim = output.shape if output.ndim == 2 else (0, 0)
        batch = rows // self.num_samples
        if dim != self.embedding_dim or batch == 0 or batch * self.num_samples != rows or batch % self.w_size:
            raise ValueError(
                f"w_mse_loss got embeddings of shape {tuple(output.shape)}; expected (num_samples * B, "
                f"embedding_dim) = ({self.num_samples} * B, {self.embedding_dim}) with B a positive multiple "
                f"of w_size={self.w_size}"
            )
        views = output.reshape(self.num_samples, batch, dim)
        pairs = list(itertools.combinations(range(self.num_samples), 2))
        total = output.new_zeros((), dtype=torch.float32)
        for _ in range(self.w_iter):
            groups = torch.randperm(batch, device=output.device).view(-1, self.w_size)
            grouped = views[:, groups]  # (num_samples, G, w_size, dim)
            white = whiten(grouped.flatten(0, 1), self.w_eps).view(grouped.shape)
            for first, second in pairs:
                total = total + view_distance(white[first], white[second], self.normalize)
        return total / (self.w_iter * len(pairs))
