"""The plugin's losses as plain PyTorch modules (no VISSL import), each built with keyword
arguments or ``from_config``.

Every module of this package is imported here, and :data:`LOSSES` holds each
:class:`~vissl_issl.losses.base.MethodLoss` subclass that names itself (``NAME``): a new loss is
found by adding its module, and :mod:`vissl_issl.plugin` registers all of them with VISSL. The
classes are also attributes of this package (``from vissl_issl.losses import DISSLLoss``).
"""

import importlib
import pkgutil
from typing import List, Tuple, Type

from vissl_issl.losses.base import MethodLoss


def named_subclasses(base: type) -> List[type]:
    found = []
    for cls in base.__subclasses__():
        found += ([cls] if "NAME" in vars(cls) else []) + named_subclasses(cls)
    return found


for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")

LOSSES: Tuple[Type[MethodLoss], ...] = tuple(sorted(named_subclasses(MethodLoss), key=lambda cls: cls.NAME))
globals().update({cls.__name__: cls for cls in LOSSES})
__all__ = ["LOSSES", "MethodLoss", *(cls.__name__ for cls in LOSSES)]
