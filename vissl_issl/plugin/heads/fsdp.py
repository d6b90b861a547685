"""The FSDP wrapping shared by the plugin's ``<name>_fsdp`` heads.

Under ``MODEL.FSDP_CONFIG.AUTO_SETUP_FSDP`` VISSL's ``infer_fsdp`` swaps only its own heads for
their FSDP variants (``mlp`` -> ``mlp_fsdp``, ...), and only in a flat ``MODEL.HEAD.PARAMS``; a
plugin head runs sharded when its config names the ``_fsdp`` variant, a factory registered next to
the head that builds the plain head and hands it to :func:`fsdp_head`.
"""

import torch.nn as nn
from fairscale.nn.data_parallel import FullyShardedDataParallel
from vissl.config import AttrDict
from vissl.utils.fsdp_utils import fsdp_auto_wrap_bn, fsdp_wrapper


def fsdp_head(head: nn.Module, model_config: AttrDict) -> FullyShardedDataParallel:
    """``head`` wrapped as VISSL wraps its ``mlp_fsdp``: every BatchNorm in its own unflattened
    fp32 FSDP (fairscale's ``auto_wrap_bn``, so its statistics and affine parameters stay in full
    precision under mixed precision and survive SyncBN conversion), then the whole head sharded
    with ``MODEL.FSDP_CONFIG``. For heads whose parameters no hook mutates: those would need their
    own fp32 wrapper, as ``swav_head_fsdp`` gives its prototypes."""
    return fsdp_wrapper(fsdp_auto_wrap_bn(head), **model_config.FSDP_CONFIG)
