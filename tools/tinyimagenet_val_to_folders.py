"""Sort TinyImageNet's val split into class folders, for VISSL's ``disk_folder`` source.

    python tools/tinyimagenet_val_to_folders.py <tiny-imagenet-200>

TinyImageNet ships ``train/<wnid>/images/*.JPEG`` (class folders already: ImageFolder reads the
``images/`` subfolders) but ``val/images/val_<i>.JPEG`` with the classes listed in
``val/val_annotations.txt`` (tab-separated: file name, wnid, bounding box). This tool copies each
listed image to ``<root>/val_folders/<wnid>/`` and leaves ``val/`` untouched.

Before writing it checks that every listed image exists and that the val classes are exactly the
``train/`` class folders (ImageFolder numbers classes by their sorted names, so equal sets give
train and val the same labels). It writes into ``val_folders.partial/`` and renames that when
complete, so an interrupted run leaves no half-filled ``val_folders/``. Running it again is a
no-op when ``val_folders/`` already matches the annotations, and an error when it does not.
"""

import argparse
import shutil
import sys
from pathlib import Path
from typing import Dict, List, Set

OUT_NAME = "val_folders"
MAX_NAMED = 20  # missing images named in an error; the rest are counted


def read_annotations(annotations: Path) -> Dict[str, str]:
    """``{image file name: wnid}`` from ``val_annotations.txt``."""
    if not annotations.is_file():
        raise FileNotFoundError(f"{annotations} not found: is the argument a tiny-imagenet-200 folder?")
    labels = {}
    for number, line in enumerate(annotations.read_text().splitlines(), start=1):
        fields = line.split("\t")
        if len(fields) < 2 or not fields[0] or not fields[1]:
            raise ValueError(f"{annotations}:{number}: expected '<file>\\t<wnid>\\t...', got {line!r}")
        labels[fields[0]] = fields[1]
    return labels


def train_classes(root: Path) -> Set[str]:
    train = root / "train"
    if not train.is_dir():
        raise FileNotFoundError(f"{train} not found: the val classes are checked against its class folders")
    return {folder.name for folder in train.iterdir() if folder.is_dir()}


def check_sources(root: Path, labels: Dict[str, str]) -> None:
    """Raise, naming the offending files or classes, if the listed images cannot all be sorted."""
    images = root / "val" / "images"
    missing = sorted(name for name in labels if not (images / name).is_file())
    if missing:
        shown = ", ".join(missing[:MAX_NAMED])
        if len(missing) > MAX_NAMED:
            shown += f" and {len(missing) - MAX_NAMED} more"
        raise FileNotFoundError(
            f"{len(missing)} image(s) listed in {root / 'val' / 'val_annotations.txt'} missing from {images}: {shown}"
        )
    train, val = train_classes(root), set(labels.values())
    if train != val:
        raise ValueError(
            f"the val classes differ from the class folders of {root / 'train'}: only in val "
            f"{sorted(val - train)}, only in train {sorted(train - val)}"
        )


def expected_files(labels: Dict[str, str]) -> Set[str]:
    return {f"{wnid}/{name}" for name, wnid in labels.items()}


def present_files(folder: Path) -> Set[str]:
    return {path.relative_to(folder).as_posix() for path in folder.glob("*/*") if path.is_file()}


def arrange_val(root: Path) -> bool:
    """Write ``<root>/val_folders/<wnid>/<image>``; False if it was already there and complete."""
    labels = read_annotations(root / "val" / "val_annotations.txt")
    out = root / OUT_NAME
    if out.exists():
        differing = sorted(present_files(out) ^ expected_files(labels))
        if differing:
            raise FileExistsError(
                f"{out} exists but does not match the annotations ({len(differing)} file(s) differ, "
                f"e.g. {differing[:5]}); remove it to rebuild"
            )
        return False
    check_sources(root, labels)
    partial = root / f"{OUT_NAME}.partial"
    shutil.rmtree(partial, ignore_errors=True)  # left by an interrupted run of this tool
    for name, wnid in labels.items():
        (partial / wnid).mkdir(parents=True, exist_ok=True)
        shutil.copy2(root / "val" / "images" / name, partial / wnid / name)
    partial.rename(out)
    return True


def main(argv: List[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("root", type=Path, help="the tiny-imagenet-200 folder (holding train/ and val/)")
    args = parser.parse_args(argv)
    try:
        written = arrange_val(args.root)
    except (FileNotFoundError, FileExistsError, ValueError) as error:
        parser.exit(1, f"error: {error}\n")
    out = args.root / OUT_NAME
    print(f"{'wrote' if written else 'already complete:'} {out} ({len(present_files(out))} images)")


if __name__ == "__main__":
    main(sys.argv[1:])
