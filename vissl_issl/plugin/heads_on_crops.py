"""A VISSL model whose heads each see the trunk features of their own subset of crops.

Multi-crop ISSL runs the teacher head on the large crops only and the student head on all crops
(DISSL: ``MODEL.HEAD_CROPS: [[0, 1], null]``; CISSL: ``[null, null]``, both heads on every crop
where VISSL's model would chain them). VISSL's ``multi_input_output_model`` runs the trunk
once per resolution group and concatenates the features crop-major (all images of crop 0, then
crop 1, ...); this model then hands head ``i`` the rows of the crops in ``HEAD_CROPS[i]``
(``null``: all crops), so heads never compute on crops their loss term does not use.
Everything else (feature extraction, linear evaluation, freezing) is VISSL's.
"""

from typing import List, Optional

import torch
from vissl.models import register_model
from vissl.models.base_ssl_model import BaseSSLMultiInputOutputModel


def select_crops(features: torch.Tensor, num_crops: int, crops: Optional[List[int]]) -> torch.Tensor:
    """Rows of ``crops`` from crop-major ``features`` of shape ``(num_crops * B, d)``."""
    if crops is None:
        return features
    per_crop = features.chunk(num_crops)
    return torch.cat([per_crop[c] for c in crops])


@register_model("heads_on_crops_model")
class HeadsOnCropsModel(BaseSSLMultiInputOutputModel):
    def __init__(self, model_config, optimizer_config):
        super().__init__(model_config, optimizer_config)
        self.head_crops = model_config.get("HEAD_CROPS")
        if self.head_crops is not None and len(self.head_crops) != len(self.heads):
            raise ValueError(
                f"config.MODEL.HEAD_CROPS has {len(self.head_crops)} entries but "
                f"config.MODEL.HEAD.PARAMS builds {len(self.heads)} heads: give one crop list "
                "(or null for all crops) per head."
            )
        self._num_crops = None

    def multi_res_input_forward(self, batch, feature_names):
        # heads_forward only sees the concatenated features; it needs the crop count to split them.
        self._num_crops = len(batch)
        try:
            return super().multi_res_input_forward(batch, feature_names)
        finally:
            self._num_crops = None

    def heads_forward(self, feats, heads):
        if self.head_crops is None:
            return super().heads_forward(feats, heads)
        if self._num_crops is None and any(crops is not None for crops in self.head_crops):
            raise ValueError(
                f"config.MODEL.HEAD_CROPS={self.head_crops} selects crops, but the model got one "
                "tensor instead of one per crop: use config.DATA.TRAIN.COLLATE_FUNCTION=multicrop_collator"
            )
        (features,) = feats
        return [head(select_crops(features, self._num_crops, crops)) for head, crops in zip(heads, self.head_crops)]
