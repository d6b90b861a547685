"""``entropy_bottleneck``: the lossyless compressor's code and its rate (Dubois et al. 2021, spec
A.2), for VIC, BINCE and the feature compressor over a frozen trunk.

On features ``x`` ``(N, in_dim)``, with ``dims = [in_dim, z_dim]``::

    z = W x + c                      the encoder's last layer; z = x when in_dim == z_dim
    z_in = (z + b) * exp(s)          learned per-dimension affine map, s = 1 and b = 0 at init
    z_hat_in, bits = R(z_in)         :class:`~vissl_issl.maths.rate.Rate`, in bits per row
    z_hat = z_hat_in * exp(-s) - b

``s`` sets each dimension's quantisation step (``exp(-s)`` in z units; e^-1 at init, as in
lossyless). ``R`` adds uniform noise in training and rounds in evaluation, so ``z_hat`` is what
the receiver gets. The whole head runs in fp32 with autocast off, so that :meth:`codes` outside
autocast (the coding CLI) gives the codes the model was trained on.

The output packs ``[z_hat (D) | z (D) | bits (1) | aux (1)]``, ``(N, 2D + 2)``, fp32
(:mod:`vissl_issl.architectures.packed_outputs`). ``aux`` is CompressAI's quantile loss
divided by N in every row: summed over a rank's rows it is the loss, computed inside the forward
so that DDP sees the ``quantiles`` used. It trains only the ``quantiles``, which the rate does not
(keep them out of weight decay: ``OPTIMIZER.non_regularized_parameters``).

Options: ``dims`` ``[in_dim, z_dim]``; ``prior`` ``"factorized"`` (``H_factorized``) or
``"hyperprior"`` (``H_hyper``, the lossyless default).
"""

from typing import List

import torch
from torch import Tensor, nn
from vissl.config import AttrDict
from vissl.models.heads import register_model_head

from vissl_issl.maths.rate import FactorizedRate, HyperpriorRate

PRIORS = {"factorized": FactorizedRate, "hyperprior": HyperpriorRate}


@register_model_head("entropy_bottleneck")
class EntropyBottleneckHead(nn.Module):
    def __init__(self, model_config: AttrDict, dims: List[int], prior: str = "factorized"):
        super().__init__()
        if len(dims) != 2 or not all(isinstance(d, int) and d > 0 for d in dims):
            raise ValueError(f"entropy_bottleneck needs dims [in_dim, z_dim] of positive integers, got dims={dims}")
        if prior not in PRIORS:
            raise ValueError(f"entropy_bottleneck prior must be one of {sorted(PRIORS)}, got prior={prior!r}")
        in_dim, z_dim = dims
        self.encoder = nn.Linear(in_dim, z_dim) if in_dim != z_dim else nn.Identity()
        self.log_scale = nn.Parameter(torch.ones(z_dim))
        self.shift = nn.Parameter(torch.zeros(z_dim))
        self.rate = PRIORS[prior](z_dim)

    def forward(self, features: Tensor) -> Tensor:
        """``(N, in_dim)`` -> ``(N, 2D + 2)`` packed ``[z_hat | z | bits | aux]``, fp32."""
        with torch.autocast(features.device.type, enabled=False):
            z = self.codes(features)
            z_hat_in, bits = self.rate(self._to_rate(z))
            aux = (self.rate.aux_loss() / len(z)).expand(len(z), 1)
            return torch.cat([self._from_rate(z_hat_in), z, bits[:, None], aux], dim=1)

    def codes(self, features: Tensor) -> Tensor:
        """``(N, in_dim)`` -> ``z`` ``(N, D)``, fp32, before quantisation."""
        with torch.autocast(features.device.type, enabled=False):
            return self.encoder(features.float())

    @torch.no_grad()
    def compress(self, features: Tensor) -> List[bytes]:
        """``(N, in_dim)`` -> one record per row; needs :meth:`update` after the last training step."""
        return self.rate.compress(self._to_rate(self.codes(features)))

    @torch.no_grad()
    def decompress(self, records: List[bytes]) -> Tensor:
        """Records -> ``z_hat`` ``(N, D)``, fp32: exactly the evaluation forward's ``z_hat``."""
        return self._from_rate(self.rate.decompress(records))

    def update(self) -> None:
        """Builds the range coder's tables (:meth:`Rate.update`)."""
        self.rate.update()

    def _to_rate(self, z: Tensor) -> Tensor:
        return (z + self.shift) * torch.exp(self.log_scale)

    def _from_rate(self, z_hat_in: Tensor) -> Tensor:
        return z_hat_in * torch.exp(-self.log_scale) - self.shift
