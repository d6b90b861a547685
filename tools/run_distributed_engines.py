"""Drop-in for VISSL's tools/run_distributed_engines.py that loads vissl_issl in every process.

    python tools/run_distributed_engines.py config=pretrain/dissl/dissl_resnet50_d8192_e400_m6 \
        config.DATA.TRAIN.DATA_PATHS=[/path/to/imagenet/train]

Same CLI as VISSL's (``config=... config.X=... +config.Y=...``, ``node_id=``, ``engine_name=``).
"""

import sys

import vissl_issl.plugin  # noqa: F401  (module top: spawned ranks re-import this script and register)
from vissl_issl.plugin.launcher import hydra_main

if __name__ == "__main__":
    hydra_main(overrides=sys.argv[1:])
