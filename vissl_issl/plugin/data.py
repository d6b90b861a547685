"""The plugin's data sources, collator and transform, registered with VISSL.

``sklearn_digits`` (:mod:`vissl_issl.data.digits`). Config (TRAIN and TEST alike)::

    DATA_SOURCES: [sklearn_digits]
    DATASET_NAMES: [sklearn_digits]
    LABEL_SOURCES: [torchvision_dataset]   # class labels; [] for pretraining (sample_index)
    DIGITS_IMAGE_SIZE: 16                  # optional; on the CLI it needs a leading '+'

Why these keys. VISSL 0.1.6 has no data-source or label-source registry:

- Data sources are the plain dict ``vissl.data.DATASET_SOURCE_MAP``, which this module fills.
- ``dataset_catalog.get_data_files`` special-cases only ``synthetic``; every other source needs
  ``DATA_PATHS`` or a catalog entry for its ``DATASET_NAMES``, and even with ``DATA_PATHS`` it looks
  the name up in the catalog whenever ``LABEL_PATHS`` is empty. this module therefore adds a
  catalog entry ``sklearn_digits`` whose data path is the bundled ``digits.csv.gz`` (informative
  only: the source reads through ``load_digits``) and whose label path is empty, so no label file
  is ever passed on.
- ``GenericSSLDataset.load_labels`` hard-codes its label sources. The ``torchvision_dataset``
  branch is the only one that asks the data object itself (``get_labels()``) and never checks the
  object's type, so ``LABEL_SOURCES: [torchvision_dataset]`` gives this source its real labels
  with no patching of VISSL. (``synthetic`` would give all-zero labels, ``disk_folder`` asserts the
  data source is ``disk_folder``, ``disk_filelist`` wants ``.npy`` files.) With ``LABEL_SOURCES:
  []`` VISSL forces ``LABEL_TYPE: sample_index``, which is what pretraining wants.

``DATA_LIMIT`` and ``DATA_LIMIT_SAMPLING`` (balanced too) work: the source is in
``DATA_SOURCES_WITH_SUBSET_SUPPORT``, so ``GenericSSLDataset`` subsamples it like ``synthetic``.

``stl10_unlabeled`` (:mod:`vissl_issl.data.stl10`): STL-10's ``train+unlabeled`` split; its catalog
entry only needs to exist (VISSL looks ``DATASET_NAMES`` up whenever ``LABEL_PATHS`` is empty; the
data comes from ``DATA_PATHS``, and an empty label path passes no label file).

``augmented_canonical_collator`` (:mod:`vissl_issl.data.canonical_collator`), for VIC.

``ImgPilToIsslViews`` (:mod:`vissl_issl.data.augmentations`): the ISSL TinyImageNet experiments'
views, SimCLR augmentations with a strength ``s`` (``strength: 1.0, blur: False`` is "standard",
``strength: 2.0, blur: True`` is "coarse")::

    TRANSFORMS:
      - name: ImgPilToIsslViews
        size: 64          # 16 for the embedded digits
        strength: 1.0
        blur: False
        total_num_crops: 2  # views per image; required: VISSL's loss inference reads this key
      - name: ToTensor    # applied to every view
      - name: Normalize
        mean: [...]
        std: [...]
    COLLATE_FUNCTION: multicrop_collator

Why the name also goes into ``DEFAULT_TRANSFORM_TYPES["TRANSFORMS_WITH_COPIES"]``: VISSL's
``SSLTransformsWrapper`` flattens a transform's list of views into the sample (one entry per view,
labels and indices repeated, so that ``ToTensor`` and ``Normalize`` then apply to each view and
``multicrop_collator`` gets one tensor per view) only for the names in that list; the list has no
registration function, so this module appends to it, as VISSL's ``ImgPilToMultiCrop`` is listed there.

``disk_folder`` and ``disk_filelist`` are VISSL's sources replaced by
:class:`~vissl_issl.plugin.disk_images.DiskImages` (broken images counted, not fatal).
"""

from vissl_issl.plugin import disk_images

from classy_vision.dataset.transforms import register_transform
from vissl.data import DATA_SOURCES_WITH_SUBSET_SUPPORT, DATASET_SOURCE_MAP, VisslDatasetCatalog
from vissl.data.collators import register_collator
from vissl.data.ssl_transforms import DEFAULT_TRANSFORM_TYPES

from vissl_issl.data import augmentations, canonical_collator, digits, stl10


def register_source(name: str, source: type, catalog_entry: list) -> None:
    DATASET_SOURCE_MAP[name] = source
    DATA_SOURCES_WITH_SUBSET_SUPPORT.add(name)
    # A user catalog (VISSL_DATASET_CATALOG_PATH) may already define the name; theirs wins, and
    # registering twice would raise.
    if not VisslDatasetCatalog.has_data(name):
        VisslDatasetCatalog.register_data(name, {"train": catalog_entry, "val": catalog_entry})


register_source(digits.SOURCE_NAME, digits.DigitsDataset, [digits.bundled_data_file(), ""])
register_source(stl10.NAME, stl10.STL10Unlabeled, ["", ""])
DATASET_SOURCE_MAP.update(dict.fromkeys(disk_images.SOURCES, disk_images.DiskImages))
register_collator(canonical_collator.NAME)(canonical_collator.augmented_canonical_collator)
register_transform(augmentations.NAME)(augmentations.IsslViews)
DEFAULT_TRANSFORM_TYPES["TRANSFORMS_WITH_COPIES"].append(augmentations.NAME)
