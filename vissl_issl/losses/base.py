"""The method contract: what every plugin loss has besides its maths.

A loss is a plain ``torch.nn.Module`` built from keyword arguments, so it runs in any PyTorch loop;
:mod:`vissl_issl.plugin` registers each one with VISSL under :attr:`MethodLoss.NAME`. A subclass
states its maths, its ``DEFAULTS`` and its config inference (:meth:`MethodLoss.infer`); this base
owns the rest:

- ``from_config(loss_config)``: the constructor's keyword arguments from ``config.LOSS.<NAME>``
  over ``DEFAULTS``, unknown keys refused, ``INFERRED`` keys required;
- ``infer_config(config)``: fills the block's defaults, runs :meth:`infer`, and, for losses that
  average per-rank means (``EQUAL_BATCHES``), requires ``DATA.TRAIN.DROP_LAST`` on several processes;
- ``HOOKS``: the names of the training hooks the loss needs (the plugin's hook generator adds them);
- ``last_terms``: the named terms of the objective at the last call, which a multi-term loss records
  with ``record_terms`` and the plugin names when the loss goes non-finite;
- ``key(name)``: ``config.LOSS.<NAME>.<name>`` for error messages; ``__repr__`` of the settings.
"""

import pprint
from typing import Any, ClassVar, Dict, Mapping, Tuple

import torch
from torch import nn

from vissl_issl.config import loss_block, loss_params, require


class MethodLoss(nn.Module):
    """Base of the plugin's losses; see the module docstring."""

    NAME: ClassVar[str]
    DEFAULTS: ClassVar[Dict[str, Any]] = {}
    INFERRED: ClassVar[Tuple[str, ...]] = ()
    HOOKS: ClassVar[Tuple[str, ...]] = ()
    # Each rank returns the mean over its own rows, so DDP's gradient average equals the
    # whole-batch mean only when every rank has the same batch.
    EQUAL_BATCHES: ClassVar[bool] = True

    def __init__(self) -> None:
        super().__init__()
        self.last_terms: Dict[str, torch.Tensor] = {}

    def record_terms(self, **terms: torch.Tensor) -> None:
        """Make ``terms`` this call's :attr:`last_terms`, detached and left on their device (reading
        them would synchronise with the host at every step)."""
        self.last_terms = {name: term.detach() for name, term in terms.items()}

    @classmethod
    def key(cls, name: str = "") -> str:
        """The config key of the loss's block, or of ``name`` in it."""
        return f"config.LOSS.{cls.NAME}" + (f".{name}" if name else "")

    @classmethod
    def from_config(cls, loss_config: Mapping[str, Any]) -> "MethodLoss":
        return cls(**loss_params(loss_config, cls.NAME, cls.DEFAULTS, cls.INFERRED))

    @classmethod
    def infer_config(cls, config) -> None:
        """Check the config around the loss and fill ``config.LOSS.<NAME>``, in place; raise
        :class:`~vissl_issl.config.ConfigError` naming the key on anything inconsistent."""
        block = loss_block(config, cls.NAME, cls.DEFAULTS)
        cls.infer(config, block)
        if cls.EQUAL_BATCHES and config.DISTRIBUTED.NUM_NODES * config.DISTRIBUTED.NUM_PROC_PER_NODE > 1:
            require(
                config.DATA.TRAIN.DROP_LAST, True, "config.DATA.TRAIN.DROP_LAST", f"{cls.NAME} on several processes"
            )

    @classmethod
    def infer(cls, config, block) -> None:
        """The loss's own inference: fill ``block``'s inferred keys from ``config`` and check."""

    def settings(self) -> Dict[str, Any]:
        return {name: getattr(self, name) for name in self.DEFAULTS if hasattr(self, name)}

    def __repr__(self) -> str:
        return pprint.pformat({"name": self._get_name(), **self.settings()}, indent=2)
