"""Build ImageNet-100 (CMC's 100-class subset of ImageNet-1k) as class folders from ImageNet.

    python tools/build_imagenet100.py <imagenet_root> <out_root> [--copy]

``<imagenet_root>`` holds ``train/<wnid>/`` and ``val/<wnid>/`` (the usual layout, val already
sorted into class folders). The tool makes ``<out_root>/{train,val}/<wnid>`` for the 100 classes
below: symlinks to the ImageNet class folders (absolute targets; torchvision's ImageFolder, hence
VISSL's ``disk_folder``, follows them), or copies with ``--copy``. It checks that all 200 source
folders exist before writing anything, and refuses an ``<out_root>`` that exists and is not empty.
"""

import argparse
import shutil
import sys
from pathlib import Path
from typing import List

SPLITS = ("train", "val")

# The 100 WordNet ids of CMC's ImageNet-100 (Tian, Krishnan, Isola, "Contrastive Multiview
# Coding", 2019), in the order of github.com/HobbitLong/CMC/blob/master/imagenet100.txt
# (commit bc687a2).
IMAGENET100_WNIDS = (
    "n02869837",
    "n01749939",
    "n02488291",
    "n02107142",
    "n13037406",
    "n02091831",
    "n04517823",
    "n04589890",
    "n03062245",
    "n01773797",
    "n01735189",
    "n07831146",
    "n07753275",
    "n03085013",
    "n04485082",
    "n02105505",
    "n01983481",
    "n02788148",
    "n03530642",
    "n04435653",
    "n02086910",
    "n02859443",
    "n13040303",
    "n03594734",
    "n02085620",
    "n02099849",
    "n01558993",
    "n04493381",
    "n02109047",
    "n04111531",
    "n02877765",
    "n04429376",
    "n02009229",
    "n01978455",
    "n02106550",
    "n01820546",
    "n01692333",
    "n07714571",
    "n02974003",
    "n02114855",
    "n03785016",
    "n03764736",
    "n03775546",
    "n02087046",
    "n07836838",
    "n04099969",
    "n04592741",
    "n03891251",
    "n02701002",
    "n03379051",
    "n02259212",
    "n07715103",
    "n03947888",
    "n04026417",
    "n02326432",
    "n03637318",
    "n01980166",
    "n02113799",
    "n02086240",
    "n03903868",
    "n02483362",
    "n04127249",
    "n02089973",
    "n03017168",
    "n02093428",
    "n02804414",
    "n02396427",
    "n04418357",
    "n02172182",
    "n01729322",
    "n02113978",
    "n03787032",
    "n02089867",
    "n02119022",
    "n03777754",
    "n04238763",
    "n02231487",
    "n03032252",
    "n02138441",
    "n02104029",
    "n03837869",
    "n03494278",
    "n04136333",
    "n03794056",
    "n03492542",
    "n02018207",
    "n04067472",
    "n03930630",
    "n03584829",
    "n02123045",
    "n04229816",
    "n02100583",
    "n03642806",
    "n04336792",
    "n03259280",
    "n02116738",
    "n02108089",
    "n03424325",
    "n01855672",
    "n02090622",
)


def missing_class_folders(imagenet_root: Path) -> List[Path]:
    """The ``<imagenet_root>/{train,val}/<wnid>`` folders of ImageNet-100 that do not exist."""
    return [
        imagenet_root / split / wnid
        for split in SPLITS
        for wnid in IMAGENET100_WNIDS
        if not (imagenet_root / split / wnid).is_dir()
    ]


def check_can_build(imagenet_root: Path, out_root: Path) -> None:
    """Raise, naming the offending folders, before anything is written."""
    missing = missing_class_folders(imagenet_root)
    if missing:
        listed = "\n  ".join(str(path) for path in missing)
        raise FileNotFoundError(
            f"{len(missing)} ImageNet-100 class folder(s) missing under {imagenet_root} "
            f"(expected train/<wnid>/ and val/<wnid>/ for each class):\n  {listed}"
        )
    if out_root.exists() and (not out_root.is_dir() or any(out_root.iterdir())):
        raise FileExistsError(f"{out_root} exists and is not an empty folder; refusing to write into it")


def build_imagenet100(imagenet_root: Path, out_root: Path, copy: bool = False) -> None:
    """Link (default) or copy the 100 classes' train and val folders into ``out_root``."""
    imagenet_root = imagenet_root.resolve()
    check_can_build(imagenet_root, out_root)
    for split in SPLITS:
        (out_root / split).mkdir(parents=True)
        for wnid in IMAGENET100_WNIDS:
            source, target = imagenet_root / split / wnid, out_root / split / wnid
            if copy:
                shutil.copytree(source, target)
            else:
                target.symlink_to(source, target_is_directory=True)


def main(argv: List[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("imagenet_root", type=Path, help="ImageNet folder with train/<wnid>/ and val/<wnid>/")
    parser.add_argument("out_root", type=Path, help="new (or empty) folder for ImageNet-100")
    parser.add_argument("--copy", action="store_true", help="copy the class folders instead of symlinking them")
    args = parser.parse_args(argv)
    try:
        build_imagenet100(args.imagenet_root, args.out_root, copy=args.copy)
    except (FileNotFoundError, FileExistsError) as error:
        parser.exit(1, f"error: {error}\n")
    action = "copied" if args.copy else "linked"
    print(f"ImageNet-100: {len(IMAGENET100_WNIDS)} classes x {len(SPLITS)} splits {action} into {args.out_root}")


if __name__ == "__main__":
    main(sys.argv[1:])
