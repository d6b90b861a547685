"""Random number generator states in checkpoints, so that a resumed run draws what the run it
resumes would have drawn.

VISSL seeds every rank once at start (``SEED_VALUE + rank``) and saves no generator state: a run
resumed from a checkpoint draws other crops, flips and colour jitters than the run it continues,
so it cannot match an uninterrupted run. This hook snapshots Python's, NumPy's, torch's and CUDA's
generator states of every rank at each instant VISSL checkpoints (phase ends; every
``CHECKPOINT_ITER_FREQUENCY`` iterations) and restores each rank's own on resume, at the point of
the training loop where it was taken: before the next phase's data iterator is made for a phase
checkpoint, right after the resumed phase's iterator is made for an iteration checkpoint (the
iterator draws its base seed from torch's generator when it is made).

Exact with ``NUM_DATALOADER_WORKERS: 0``. Data loader workers seed themselves from that base seed
when the iterator is made, so after a resume in the middle of a phase their draws differ from the
uninterrupted run's until the phase ends (the data order does not: VISSL's sampler is seeded by
epoch). The hook must run before VISSL's checkpoint hook (:func:`vissl_issl.plugin.hooks.hook_generator`
puts it first).
"""

import logging
import random
from typing import Any, Dict, Optional

from vissl_issl.plugin.hooks.base import PluginHook

import numpy as np
import torch

from vissl_issl.maths.distributed import gather_objects, rank, world_size

State = Dict[str, Any]


def own_rank_state(state: State, what: str) -> Optional[Any]:
    """This rank's entry of a checkpointed ``{"ranks": [one per rank]}``; None (each rank keeps its
    fresh seed, with a warning) for a checkpoint without it or of another number of ranks."""
    if not state:
        return None  # a checkpoint written without the hook
    ranks = state["ranks"]
    if len(ranks) != world_size():
        logging.warning(
            f"The checkpoint holds the {what} of {len(ranks)} ranks and this run has {world_size()}: each rank "
            "keeps its fresh seed, so the resumed run draws other augmentations than the one it resumes"
        )
        return None
    return ranks[rank()]


def generator_states() -> State:
    # NumPy's uint32 key as an int64 tensor: classy_vision loads checkpoints with torch.load's
    # weights_only=True, which refuses NumPy arrays, and torch cannot pickle uint32 tensors.
    name, key, position, has_gauss, cached_gaussian = np.random.get_state()
    return {
        "python": random.getstate(),
        "numpy": (name, torch.from_numpy(key.astype(np.int64)), position, has_gauss, cached_gaussian),
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else [],
    }


def set_generator_states(state: State) -> None:
    random.setstate(state["python"])
    name, key, position, has_gauss, cached_gaussian = state["numpy"]
    np.random.set_state((name, key.numpy().astype(np.uint32), position, has_gauss, cached_gaussian))
    torch.set_rng_state(state["torch"])
    if state["cuda"]:
        torch.cuda.set_rng_state_all(state["cuda"])


class RngStateHook(PluginHook):
    def __init__(self):
        super().__init__()
        self.snapshot: State = {}
        self.pending: Optional[State] = None

    def snap(self, mid_phase: bool) -> None:
        self.snapshot = {"mid_phase": mid_phase, "ranks": gather_objects(generator_states())}

    def on_step(self, task) -> None:
        frequency = task.config["CHECKPOINT"]["CHECKPOINT_ITER_FREQUENCY"]
        if task.train and frequency > 0 and task.iteration % frequency == 0:
            self.snap(mid_phase=True)

    def on_phase_end(self, task) -> None:
        if task.train:
            self.snap(mid_phase=False)

    def on_start(self, task) -> None:
        # VISSL saves every hook's get_classy_state() in its checkpoints but never hands it back
        # (its task's _set_classy_state skips hooks): read it from the checkpoint resumed from.
        checkpoint = getattr(task, "checkpoint", None)
        if checkpoint is not None:
            self.restore(checkpoint["classy_state_dict"].get("hooks", {}).get(self.name(), {}))

    def on_phase_start(self, task) -> None:
        if self.pending is not None:
            set_generator_states(self.pending)
            self.pending = None

    def get_classy_state(self) -> State:
        return self.snapshot

    def restore(self, state: State) -> None:
        own = own_rank_state(state, "generator states")
        if own is None:
            return
        if state["mid_phase"]:
            self.pending = own
        else:
            set_generator_states(own)
