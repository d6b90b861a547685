"""classy_vision's ``adam`` and ``adamw`` (the digits, TinyImageNet and compressor recipes') build
torch's per-tensor loop; built here as torch's fused kernel (one pass over each parameter) wherever
every parameter is a floating-point CPU or CUDA tensor. Same update (torch's own Adam/AdamW) and
``state_dict`` layout; torch restores each group's ``fused`` flag from a checkpoint, so a run
resumed from one written by the loop keeps the loop. The digits step's optimizer phase: 21 -> 7 ms
(``docs/benchmarks.md``, "Where the time went").
"""

import torch
from classy_vision.optim.adam import Adam
from classy_vision.optim.adamw import AdamW

from vissl_issl.compat import fused_kernel_supported


def _fused_prepare(torch_class):
    def prepare(self, param_groups) -> None:
        self.optimizer = torch_class(
            param_groups,
            lr=self._lr,
            betas=self._betas,
            eps=self._eps,
            weight_decay=self._weight_decay,
            amsgrad=self._amsgrad,
            fused=fused_kernel_supported(param_groups) or None,
        )

    return prepare


def install() -> None:
    Adam.prepare = _fused_prepare(torch.optim.Adam)
    AdamW.prepare = _fused_prepare(torch.optim.AdamW)
