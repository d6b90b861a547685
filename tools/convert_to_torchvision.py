"""Converts the trunk of a VISSL checkpoint trained with this plugin to a torchvision ResNet state
dict in the authors' release layout (torchvision's keys, resizer under ``resizer.``, no ``fc``).

    python tools/convert_to_torchvision.py <vissl checkpoint> <out.torch>

A ResNet-50 (with or without the 2048->512->8192 resizer) loads into hubconf's DISSL entrypoints:
``torch.hub.load(<repo>, "dissl_resnet50_d8192_e400_m6", weights="<out.torch>")``. Any converted
trunk loads with ``vissl_issl/hub.py``: ``build_resnet(<printed architecture>)`` then
``load_weights(model, read_weights_file(out), out)``. The architecture comes from the
checkpoint folder's ``train_config.yaml``, else from the weight shapes (maxpool then assumed).
Needs only torch and torchvision (PyYAML with a train_config.yaml), not VISSL.
"""

import argparse
import sys
from pathlib import Path
from typing import List, Optional

import torch

from vissl_issl import hub


def main(argv: Optional[List[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint", type=Path, help="a VISSL checkpoint (.torch) of this plugin")
    parser.add_argument("out", type=Path, help="where to write the torchvision state dict")
    args = parser.parse_args(argv)

    try:
        model, arch = hub.load_checkpoint(args.checkpoint)
    except (hub.CheckpointError, OSError) as error:
        sys.exit(f"error: {error}")
    torch.save(hub.torchvision_to_release(model.state_dict()), args.out)

    config = hub.train_config_path(args.checkpoint)
    origin = f"from {config}" if config.is_file() else "inferred from the weight shapes; maxpool assumed"
    print(f"architecture: {arch} ({origin})")
    print(f"feature dim: {arch.feature_dim}")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
