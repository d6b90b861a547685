r"""``augmented_canonical_collator``: VIC's batches, the augmented view as the model input and the
canonical (un-augmented) view as the target (compression_ssl.md §A.3).

Each sample must carry exactly two views made by the transforms: view 0 augmented, view 1 the
canonical image with only the base transforms, e.g.::

    TRANSFORMS:
      - name: ImgReplicatePil          # two copies of the (base-resized) image
        num_times: 2
      - name: ImgPilMultiCropRandomApply
        transforms: [{name: RandomResizedCrop, size: 16, scale: [0.6, 1.0]}, ...]
        prob: [1.0, 0.0]               # augment view 0 only
      - name: ToTensor
      - name: ImgPilMultiCropRandomApply
        transforms: [{name: Normalize, mean: [0.5, 0.5, 0.5], std: [0.5, 0.5, 0.5]}]
        prob: [1.0, 0.0]               # the canonical target stays in [0, 1]

The collator returns, for B samples::

    data:       [(B, C, H, W)]  view 0 of every sample        -> sample["input"]
    label:      [(B, C, H, W)]  view 1 of every sample        -> sample["target"] (the loss's target)
    data_valid: [(B,)]          data_idx: [(B,)]

VISSL's ``construct_sample_for_model`` keeps ``data`` as the input and ``label`` as the target
(``DATA.TRAIN.INPUT_KEY_NAMES: [data]``, ``TARGET_KEY_NAMES: [label]``, the defaults), so
``vic_loss`` receives the canonical images as its ``target`` with no hook. The dataset's own
labels are dropped (pretraining has none to use).
"""

from typing import Any, Dict, List

import torch

NAME = "augmented_canonical_collator"
VIEWS = 2


def augmented_canonical_collator(batch: List[Dict[str, Any]]) -> Dict[str, List[torch.Tensor]]:
    """See the module docstring."""
    for sample in batch:
        if len(sample["data"]) != VIEWS:
            raise ValueError(
                f"{NAME} needs {VIEWS} views per sample (augmented, canonical), got {len(sample['data'])}: make them "
                "with ImgReplicatePil num_times 2 and augment view 0 only (ImgPilMultiCropRandomApply prob [1.0, 0.0])"
            )
    augmented = torch.stack([sample["data"][0] for sample in batch])
    canonical = torch.stack([sample["data"][1] for sample in batch])
    if augmented.shape != canonical.shape:
        raise ValueError(
            f"{NAME}: augmented views of shape {tuple(augmented.shape[1:])} but canonical views of shape "
            f"{tuple(canonical.shape[1:])}; both must have the decoder's image shape"
        )
    return {
        "data": [augmented],
        "label": [canonical],
        "data_valid": [torch.tensor([sample["data_valid"][0] for sample in batch])],
        "data_idx": [torch.tensor([sample["data_idx"][0] for sample in batch])],
    }
