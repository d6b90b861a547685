"""Converts trunk weights (a VISSL checkpoint of this plugin, or any format of
``vissl_issl/weights.py``) to a torchvision ResNet state dict in the authors' release layout
(torchvision's keys, resizer under ``resizer.``, no ``fc``).

    python tools/convert_to_torchvision.py <weights> <out.torch>

A ResNet-50 (with or without the 2048->512->8192 resizer) loads into hubconf's DISSL entrypoints:
``torch.hub.load(<repo>, "dissl_resnet50_d8192_e400_m6", weights="<out.torch>")``. Any converted
trunk loads with ``vissl_issl/hub.py``: ``build_resnet(<printed architecture>)`` then
``load_weights(model, read_weights_file(out), out)``. The architecture comes from the
checkpoint folder's ``train_config.yaml``, else from the weight shapes (maxpool then assumed).
``tools/probe.py --config NAME`` and a compressor's ``MODEL.WEIGHTS_INIT.PARAMS_FILE`` take the
result back into a VISSL trunk.
Needs only torch and torchvision (PyYAML with a train_config.yaml), not VISSL.
"""

import argparse
import sys
from pathlib import Path
from typing import List, Optional

import torch

from vissl_issl import hub, weights


def main(argv: Optional[List[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint", help="a VISSL checkpoint (.torch) of this plugin, or other weights")
    parser.add_argument("out", type=Path, help="where to write the torchvision state dict")
    args = parser.parse_args(argv)

    try:
        model, loaded = weights.load_trunk(args.checkpoint)
    except (hub.CheckpointError, OSError) as error:
        sys.exit(f"error: {error}")
    torch.save(hub.torchvision_to_release(model.state_dict()), args.out)

    config = hub.train_config_path(args.checkpoint)
    known = loaded.layout == weights.VISSL_CHECKPOINT and config.is_file()
    origin = f"from {config}" if known else "inferred from the weight shapes; maxpool assumed"
    if args.checkpoint.startswith(weights.HUB_PREFIX):
        origin = "the release's"
    print(f"architecture: {loaded.arch} ({origin})")
    print(f"feature dim: {loaded.arch.feature_dim}")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
