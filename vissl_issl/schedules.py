"""Learning-rate schedules stated in the papers' terms, derived into VISSL's ``param_schedulers.lr``.

A recipe states its schedule in the plugin block ``config.OPTIMIZER.lr_schedule``::

    lr_schedule:
      lr_per_256: 0.3      # peak lr per 256 images of global batch (linear scaling), or
      # lr: 0.002          #   the peak lr itself, whatever the batch (exactly one of the two)
      start_lr: 0.001      # lr at the first step of the warm-up (absolute; default 0)
      warmup_epochs: 10    # warm-up length: warmup_epochs, warmup_steps (which needs
                           #   num_train_images, the training-set size) or warmup_fraction
      decay: cosine        # cosine (to final_lr, default 0) or step (x decay_factor at each
                           #   of decay_epochs, or of decay_epochs_before_end counted from the end)

and :func:`derive_lr_schedule` writes the VISSL schedule from the global batch
B = ``BATCHSIZE_PER_REPLICA x NUM_PROC_PER_NODE x NUM_NODES`` and E = ``OPTIMIZER.num_epochs``,
so that more epochs or another machine count need no new scheduler block. With t in [0, 1] the
fraction of training done (VISSL's ``where``, updated every step) and

    peak = lr_per_256 x B / 256  (or lr)
    w    = warmup_epochs / E  =  warmup_steps / (S x E)  =  warmup_fraction,
           S = steps per epoch = floor(ceil(N / ranks) / BATCHSIZE_PER_REPLICA) (ceil without
           DROP_LAST), N = num_train_images (or DATA.TRAIN.DATA_LIMIT when smaller)

the learning rate is

    lr(t) = start_lr + (peak - start_lr) x t / w                     for t < w, then
    lr(t) = final_lr + (peak - final_lr) x (1 + cos(pi t)) / 2       (cosine), or
    lr(t) = peak x decay_factor^k, k = number of milestones m_i with m_i / E <= t   (step).

The cosine runs over the whole of training (VISSL's ``fixed`` interval scaling), as in the
authors' VISSL configs, so it starts just below the peak where the warm-up ends.

VISSL form: ``name: composite`` with ``update_interval: step`` and ``auto_scale: false``; a linear
warm-up (``rescaled``) then ``cosine`` (``fixed``) with ``lengths [w, 1 - w]``, or constants at
peak x decay_factor^k (``fixed``) with ``lengths [w, m_1 / E - w, m_2 / E - m_1 / E, ..., 1 - m_k / E]``.
Phases of length 0 (no warm-up) are left out. The values are computed exactly on the decimals the
recipe writes (0.3 x 3072 / 256 gives 3.6, not 3.5999999999999996).

A ``null`` key counts as absent, so that a recipe can drop a key it inherits, and
``lr_schedule: null`` leaves a recipe's own ``param_schedulers.lr`` as written.
"""

import math
from fractions import Fraction
from typing import Any, Dict, List, Mapping, Optional, Tuple

from vissl_issl.config import ConfigError

KEY = "config.OPTIMIZER.lr_schedule"
KNOWN_KEYS = (
    "lr_per_256", "lr", "start_lr", "warmup_epochs", "warmup_steps", "warmup_fraction", "num_train_images",
    "decay", "final_lr", "decay_factor", "decay_epochs", "decay_epochs_before_end",
)  # fmt: skip
DECAY_KEYS = {"cosine": ("final_lr",), "step": ("decay_factor", "decay_epochs", "decay_epochs_before_end")}

Phase = Tuple[Dict[str, Any], Fraction, str]  # (VISSL scheduler, where it ends in [0, 1], interval scaling)


def derive_lr_schedule(config) -> None:
    """Writes ``config.OPTIMIZER.param_schedulers.lr`` from ``config.OPTIMIZER.lr_schedule``, in place.

    Does nothing without the block (or with ``lr_schedule: null``). Raises :class:`ConfigError`
    naming the key and its value when the block cannot describe a schedule.
    """
    block = config.OPTIMIZER.get("lr_schedule")
    if block is None:
        return
    schedule = checked_block(block)
    epochs = config.OPTIMIZER.num_epochs
    if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs <= 0:
        raise ConfigError(f"config.OPTIMIZER.num_epochs={epochs!r} must be a positive integer")
    peak = peak_lr(schedule, global_batch(config))
    warmup = warmup_fraction(config, schedule, epochs)
    linear = {"name": "linear", "start_value": float(number(schedule, "start_lr", 0)), "end_value": float(peak)}
    phases = [(linear, warmup, "rescaled")]
    if schedule.get("decay", "cosine") == "cosine":
        cosine = {"name": "cosine", "start_value": float(peak), "end_value": float(number(schedule, "final_lr", 0))}
        phases.append((cosine, Fraction(1), "fixed"))
    else:
        phases += step_phases(schedule, peak, warmup, epochs)
    write_composite(config, phases)


def checked_block(block: Any) -> Dict[str, Any]:
    """The block's non-null keys, after checking names, exclusive keys and the decay."""
    if not isinstance(block, Mapping):
        raise ConfigError(f"{KEY}={block!r} must be a mapping of {', '.join(KNOWN_KEYS)}")
    unknown = sorted(set(block) - set(KNOWN_KEYS))
    if unknown:
        values = ", ".join(f"{KEY}.{name}={block[name]!r}" for name in unknown)
        raise ConfigError(f"unknown key(s) {values}; known: {', '.join(KNOWN_KEYS)}")
    schedule = {name: value for name, value in block.items() if value is not None}
    one_of(schedule, ("lr_per_256", "lr"), required=True)
    one_of(schedule, ("warmup_epochs", "warmup_steps", "warmup_fraction"), required=False)
    decay = schedule.get("decay", "cosine")
    if decay not in DECAY_KEYS:
        raise ConfigError(f"{KEY}.decay={decay!r} must be one of {', '.join(DECAY_KEYS)}")
    for other, keys in DECAY_KEYS.items():
        for name in keys:
            if other != decay and name in schedule:
                raise ConfigError(f"{KEY}.{name}={schedule[name]!r} is for decay {other}, not {KEY}.decay={decay!r}")
    return schedule


def one_of(schedule: Mapping[str, Any], names: Tuple[str, ...], required: bool) -> None:
    present = [name for name in names if name in schedule]
    if len(present) > 1 or (required and not present):
        given = ", ".join(f"{KEY}.{name}={schedule[name]!r}" for name in present) or "none"
        how_many = "exactly" if required else "at most"
        raise ConfigError(f"set {how_many} one of {', '.join(names)} in {KEY} (given: {given})")


def number(schedule: Mapping[str, Any], name: str, default: Optional[int] = None) -> Fraction:
    """``schedule[name]`` as the exact decimal it was written as; it must be a number >= 0."""
    value = schedule.get(name, default)
    if value is None:
        raise ConfigError(f"{KEY}.{name} is required here")
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0 or math.isinf(value):
        raise ConfigError(f"{KEY}.{name}={value!r} must be a number >= 0")
    return Fraction(str(value))


def global_batch(config) -> int:
    """Images per optimisation step over all ranks."""
    return config.DATA.TRAIN.BATCHSIZE_PER_REPLICA * world_size(config)


def world_size(config) -> int:
    return config.DISTRIBUTED.NUM_NODES * config.DISTRIBUTED.NUM_PROC_PER_NODE


def peak_lr(schedule: Mapping[str, Any], batch: int) -> Fraction:
    """The peak learning rate: ``lr`` as written, or ``lr_per_256`` scaled linearly to the global batch."""
    if "lr" in schedule:
        return number(schedule, "lr")
    return number(schedule, "lr_per_256") * batch / 256


def steps_per_epoch(config, num_train_images: int) -> int:
    """VISSL's steps per epoch: its distributed sampler pads the set to a multiple of the ranks,
    each rank's loader drops the last partial batch with ``DATA.TRAIN.DROP_LAST``."""
    limit = config.DATA.TRAIN.get("DATA_LIMIT", -1)
    images = min(num_train_images, limit) if limit is not None and limit >= 0 else num_train_images
    per_rank = math.ceil(images / world_size(config))
    batch = config.DATA.TRAIN.BATCHSIZE_PER_REPLICA
    return per_rank // batch if config.DATA.TRAIN.get("DROP_LAST", False) else math.ceil(per_rank / batch)


def warmup_fraction(config, schedule: Mapping[str, Any], epochs: int) -> Fraction:
    """The warm-up's share w of training; it must end before training does."""
    if "warmup_steps" in schedule:
        name = "warmup_steps"
        images = schedule.get("num_train_images")
        if isinstance(images, bool) or not isinstance(images, int) or images <= 0:
            raise ConfigError(f"{KEY}.num_train_images={images!r} must be a positive integer with {KEY}.{name}")
        steps = steps_per_epoch(config, images)
        if steps <= 0:
            raise ConfigError(f"{KEY}.num_train_images={images!r} holds no full step of {global_batch(config)} images")
        fraction = number(schedule, name) / (steps * epochs)
    elif "warmup_fraction" in schedule:
        name = "warmup_fraction"
        fraction = number(schedule, name)
    else:
        name = "warmup_epochs"
        fraction = number(schedule, name, 0) / epochs
    if fraction >= 1:
        raise ConfigError(
            f"{KEY}.{name}={schedule.get(name)!r} does not end before training does "
            f"(config.OPTIMIZER.num_epochs={epochs}, global batch {global_batch(config)})"
        )
    return fraction


def step_phases(schedule: Mapping[str, Any], peak: Fraction, warmup: Fraction, epochs: int) -> List[Phase]:
    """Constant phases at peak x decay_factor^k, the k-th ending at the k-th milestone (then at 1)."""
    one_of(schedule, ("decay_epochs", "decay_epochs_before_end"), required=True)
    name = "decay_epochs" if "decay_epochs" in schedule else "decay_epochs_before_end"
    given = schedule[name]
    if not isinstance(given, (list, tuple)) or not given:
        raise ConfigError(f"{KEY}.{name}={given!r} must be a non-empty list of epochs")
    milestones = [number({name: e}, name) for e in given]
    if name == "decay_epochs_before_end":
        milestones = [epochs - e for e in milestones]
    ends = [m / epochs for m in milestones]
    if any(not 0 < end < 1 for end in ends) or any(a >= b for a, b in zip(ends, ends[1:])):
        raise ConfigError(
            f"{KEY}.{name}={list(given)!r} must give increasing epochs strictly inside training "
            f"(config.OPTIMIZER.num_epochs={epochs})"
        )
    if warmup > ends[0]:
        raise ConfigError(
            f"the warm-up ({float(warmup * epochs):g} epochs) ends after the first decay of "
            f"{KEY}.{name}={list(given)!r}"
        )
    factor = number(schedule, "decay_factor")
    values = [peak * factor**k for k in range(len(ends) + 1)]
    return [({"name": "constant", "value": float(v)}, end, "fixed") for v, end in zip(values, ends + [Fraction(1)])]


def write_composite(config, phases: List[Phase]) -> None:
    """VISSL's composite scheduler from phases given by where they end; empty phases are left out."""
    lr = config.OPTIMIZER.param_schedulers.lr
    schedulers, lengths, scaling, start = [], [], [], Fraction(0)
    for scheduler, end, interval_scaling in phases:
        if end > start:
            schedulers.append(scheduler)
            lengths.append(float(end - start))
            scaling.append(interval_scaling)
        start = end
    lr["name"] = "composite"
    lr["schedulers"] = schedulers
    lr["lengths"] = lengths
    lr["interval_scaling"] = scaling
    lr["update_interval"] = "step"
    lr.setdefault("auto_lr_scaling", type(lr)({}))["auto_scale"] = False
    if not config.OPTIMIZER.get("head_optimizer_params", {}).get("use_different_lr", False):
        config.OPTIMIZER.param_schedulers["lr_head"] = lr  # as VISSL's inference, which ran before
