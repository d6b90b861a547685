"""The plugin's launcher with one NaN made at one training step, for tests/test_non_finite.py.

    NAN_IN=term|gradient|output NAN_STEP=6 NAN_RANK=0 NAN_DIR=<CHECKPOINT.DIR> \
        python tests/poisoning_launcher.py config=pretrain/dissl/dissl_resnet18_digits ...

On rank ``NAN_RANK``, at its ``NAN_STEP``-th training step (0-based; each step calls the DISSL
loss and the model once):

- ``term``: DISSL's maximality term (the marginal's entropy) is NaN, the other terms are not;
- ``gradient``: the loss is finite, the gradient flowing back through the maximality term is NaN;
- ``output``: the model's head outputs are NaN (the weights that made them are finite).

At that step, before the NaN exists, it prints ``BEFORE <file> <sha256>`` for every ``*.torch`` in
``NAN_DIR``. The patches are made at module top, so ranks that VISSL spawns (which re-import this
script) have them too.
"""

import hashlib
import os
import sys
from pathlib import Path

import vissl_issl.plugin  # noqa: F401  (registration)
from vissl_issl.plugin import heads_on_crops
from vissl_issl.plugin.launcher import hydra_main

import torch
import torch.distributed as dist

from vissl_issl.losses import dissl

WHERE, STEP, RANK, FOLDER = (os.environ[name] for name in ("NAN_IN", "NAN_STEP", "NAN_RANK", "NAN_DIR"))
steps = [0]  # training steps this rank has begun (a list: the patches below update it)


def poisoned_now() -> bool:
    """Counts one step; whether it is the poisoned one (then prints the checkpoints' hashes)."""
    step, steps[0] = steps[0], steps[0] + 1
    rank = dist.get_rank() if dist.is_initialized() else 0
    if (step, rank) != (int(STEP), int(RANK)):
        return False
    for path in sorted(Path(FOLDER).glob("*.torch")):
        print(f"BEFORE {path.name} {hashlib.sha256(path.read_bytes()).hexdigest()}", flush=True)
    return True


class NanGradient(torch.autograd.Function):
    """The identity, with a NaN gradient."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        return x.clone()

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        return grad * float("nan")


entropy = dissl.entropy
heads_forward = heads_on_crops.HeadsOnCropsModel.heads_forward


def poisoned_entropy(probabilities: torch.Tensor) -> torch.Tensor:
    value = entropy(probabilities)
    if WHERE == "term" and poisoned_now():
        return value * float("nan")
    if WHERE == "gradient" and poisoned_now():
        return NanGradient.apply(value)
    return value


def poisoned_heads_forward(self, feats, heads):
    outputs = heads_forward(self, feats, heads)
    if WHERE == "output" and poisoned_now():
        return [output * float("nan") for output in outputs]
    return outputs


dissl.entropy = poisoned_entropy
heads_on_crops.HeadsOnCropsModel.heads_forward = poisoned_heads_forward

if __name__ == "__main__":
    hydra_main(overrides=sys.argv[1:])
