r"""Distortions of the lossyless compressors (Dubois et al., "Lossy Compression for Lossless
Prediction", NeurIPS 2021; compression_ssl.md §A.3-A.5), one value per row, in nats.

Each function is pure: ``(N, ...)`` tensors in, an ``(N,)`` fp32 tensor out, computed with autocast
off (VISSL may run the loss under AMP; the authors keep the objective in fp32). The compressors'
objective (``vissl_issl.losses.compression``) averages them over rows.

* :func:`gaussian_reconstruction` (VIC on colour images, ``LL:distortions.py`` ``DirectDistortion``)::

      D_n = sum_{c,h,w} (sigmoid(logits_n) - x_n)^2          x_n in [0, 1]

  the authors' ``F.mse_loss(sigmoid(decoder(z_hat)), unnormalise(target), reduction="none")``
  summed over the output elements: ``-log`` of a Gaussian of variance 1/2 around the decoded
  image, up to the constant ``(CHW / 2) log pi``.

* :func:`bernoulli_reconstruction` (VIC on black-and-white images)::

      D_n = sum_{c,h,w} BCE(logits_n, x_n) = -sum [x log sigmoid(l) + (1 - x) log(1 - sigmoid(l))]

* :func:`info_nce` (BINCE)::

      e = l2n(proj(z_hat))  gathered over every rank: 2 B_g rows, view-major per rank
      D_k = -log softmax_{j != k}(e_k . e_j / tau)[positive(k)]    2 B_g - 1 candidates

  which is VISSL's ``simclr_info_nce_loss`` per anchor (its mean over anchors is that loss).

* :func:`feature_l1` (the CLIP "lossy_Z" compressor, ``LL:distortions.py`` ``LossyZDistortion``)::

      D_n = ||z_hat_n - z_n||_1 = sum_d |z_hat_nd - z_nd|
"""

import torch
import torch.nn.functional as F

from vissl_issl.maths import gathered_batch


def _fp32(*tensors: torch.Tensor):
    return [t.float() for t in tensors]


def _check_same_shape(prediction: torch.Tensor, target: torch.Tensor, name: str) -> None:
    if prediction.shape != target.shape or prediction.ndim < 2:
        raise ValueError(
            f"{name}: prediction of shape {tuple(prediction.shape)} and target of shape "
            f"{tuple(target.shape)}; expected the same shape (N, ...)"
        )


def gaussian_reconstruction(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """``sum_{c,h,w} (sigmoid(logits) - target)^2`` per row: ``(N, C, H, W) x2 -> (N,)``, nats.
    ``target`` must be the image in [0, 1] (un-normalised)."""
    _check_same_shape(logits, target, "gaussian_reconstruction")
    with torch.autocast(device_type=logits.device.type, enabled=False):
        logits, target = _fp32(logits, target)
        return F.mse_loss(torch.sigmoid(logits), target, reduction="none").flatten(1).sum(1)


def bernoulli_reconstruction(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """``sum_{c,h,w} BCE-with-logits(logits, target)`` per row: ``(N, C, H, W) x2 -> (N,)``, nats.
    ``target`` in [0, 1] (binary, or a probability)."""
    _check_same_shape(logits, target, "bernoulli_reconstruction")
    with torch.autocast(device_type=logits.device.type, enabled=False):
        logits, target = _fp32(logits, target)
        return F.binary_cross_entropy_with_logits(logits, target, reduction="none").flatten(1).sum(1)


def feature_l1(z_hat: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """``||z_hat - z||_1`` per row: ``(N, D) x2 -> (N,)``."""
    _check_same_shape(z_hat, z, "feature_l1")
    with torch.autocast(device_type=z_hat.device.type, enabled=False):
        z_hat, z = _fp32(z_hat, z)
        return (z_hat - z).abs().flatten(1).sum(1)


def info_nce(embeddings: torch.Tensor, temperature: torch.Tensor) -> torch.Tensor:
    """InfoNCE per anchor on this rank's ``(2B, P)`` un-normalised embeddings, view-major, against
    every rank's (:func:`vissl_issl.maths.gathered_batch.info_nce`): ``(2B,)`` nats.

    ``temperature`` is a positive scalar tensor (it may carry a gradient, for a learned one).
    """
    gathered_batch.check_view_major(embeddings, "info_nce")
    logits = gathered_batch.similarity_logits(embeddings, embeddings, temperature.float())
    return gathered_batch.info_nce(logits)
