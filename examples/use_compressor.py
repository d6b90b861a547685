"""Using a trained compressor: images -> bytes -> codes, through torch.hub from a local checkout
(no download, no VISSL import). Any compressor checkpoint of this plugin works, e.g. the BINCE
quick start's:

    bash tools/env.sh python tools/quick_start.py --method bince --out quick_start_bince
    bash tools/env.sh python examples/use_compressor.py quick_start_bince/bince/checkpoint.torch
"""

import argparse
import tempfile
from pathlib import Path

import torch

from vissl_issl.data.digits import DigitsDataset

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint", help="a compressor's checkpoint, with its train_config.yaml beside it")
    args = parser.parse_args()

    compressor = torch.hub.load(str(REPO), "compressor", args.checkpoint, source="local")
    digits = DigitsDataset({"DATA": {"TEST": {}}}, "", "TEST", "sklearn_digits", "sklearn_digits")
    images = torch.stack([compressor.preprocess(digits[index][0]) for index in range(8)])  # 8 PIL images in

    records = compressor.compress(images)  # one self-contained byte string per image
    z_hat = compressor.decompress(records)  # (8, D): what a receiver gets, the eval forward's codes
    print(f"real bits per image:      {[8 * len(record) for record in records]}")
    print(f"estimated bits per image: {[round(bits, 1) for bits in compressor.rate(images).tolist()]}")
    print(f"codes: {tuple(z_hat.shape)}, equal to the model's: {torch.equal(z_hat, compressor(images)[0])}")

    with tempfile.TemporaryDirectory() as folder:  # a whole split in one file, and back
        path = Path(folder) / "digits_test.bin"
        dataset = [compressor.preprocess(digits[index][0]) for index in range(len(digits))]
        size = compressor.compress_dataset(dataset, path)
        codes = compressor.decompress_dataset(path)
        rate = f"{size.file_bits_per_record:.1f} bits/image"
        print(f"{size.count} images in {size.file_bytes} bytes ({rate}); codes {tuple(codes.shape)}")


if __name__ == "__main__":
    main()
