"""The plugin's config inference, run by its launcher after VISSL's ``infer_and_assert_hydra_config``
and before any process starts, so that a bad config fails with the offending key named instead of
mid-training: folder label paths, FSDP heads, the device augmentation's split of the TRAIN transforms,
the step options (``config.MODEL.STEP_OPTIONS``), then the loss's own
``infer_config`` (:class:`vissl_issl.losses.base.MethodLoss`).
"""

from vissl_issl.plugin.checkpointing import resume_iterations_exactly
from vissl_issl.plugin.device_augmentation import infer_device_augmentation
from vissl_issl.plugin.hooks.grad_value_clip import clip_value
from vissl_issl.plugin.hooks.online_eval import online_eval_config
from vissl_issl.plugin.input_checks import check_max_broken_fractions
from vissl_issl.plugin.step_options import read_step_options

from classy_vision.losses import LOSS_REGISTRY

from vissl_issl.config import ConfigError, head_modules

FOLDER_SOURCES = {"disk_folder", "torchvision_dataset"}


def label_paths_from_data_paths(config) -> None:
    """Splits of folders given by ``DATA_PATHS`` alone: use the same folders as ``LABEL_PATHS``.

    VISSL 0.1.6 looks an empty ``LABEL_PATHS`` up in its dataset catalog by ``DATASET_NAMES``,
    which fails (``Dataset 'imagenet1k_folder' is not registered``) without a catalog file. For
    ``disk_folder`` (labels: the class sub-folders) and ``torchvision_dataset`` (labels: the
    dataset under the same root) the label path is the data path.
    """
    for split in ("TRAIN", "TEST"):
        data = config.DATA[split]
        if data.DATA_PATHS and not data.LABEL_PATHS and set(data.DATA_SOURCES) <= FOLDER_SOURCES:
            data.LABEL_PATHS = list(data.DATA_PATHS)


def check_fsdp_world_size(config) -> None:
    """FSDP with mixed precision needs more than one process.

    VISSL's ``self_supervision_fsdp_task`` wraps the whole model in one root FSDP only when more
    than one process trains; alone, each ``_fsdp`` module is its own root, and a mixed-precision
    root casts its input to fp16 under ``no_grad`` (fairscale 0.3.7): no gradient would cross an
    FSDP module, so the trunk and all but the last module of each head would not train.
    """
    if config.TRAINER.TASK_NAME != "self_supervision_fsdp_task" or not config.MODEL.FSDP_CONFIG.mixed_precision:
        return
    if config.DISTRIBUTED.NUM_NODES * config.DISTRIBUTED.NUM_PROC_PER_NODE == 1:
        raise ConfigError(
            "config.MODEL.FSDP_CONFIG.mixed_precision=True (FSDP with config.MODEL.AMP_PARAMS.USE_AMP) "
            "needs config.DISTRIBUTED.NUM_NODES * NUM_PROC_PER_NODE > 1: on one process every FSDP "
            "head module would cut the gradient to its input; use more processes, "
            "config.MODEL.AMP_PARAMS.USE_AMP=False, or DDP"
        )


def use_fsdp_heads(config) -> None:
    """Under FSDP, swap every head module that has a registered ``<name>_fsdp`` variant for it.

    VISSL's ``infer_fsdp`` does this for its own heads, and only in a flat ``MODEL.HEAD.PARAMS``;
    the ISSL recipes give each head as a list of modules, so any recipe runs sharded with
    ``config.MODEL.FSDP_CONFIG.AUTO_SETUP_FSDP=True`` (``parts/fsdp.yaml``) and nothing else.
    """
    from vissl.models.heads import MODEL_HEADS_REGISTRY

    if config.TRAINER.TASK_NAME != "self_supervision_fsdp_task":
        return
    for head_param in config.MODEL.HEAD.PARAMS:
        for module in head_modules(head_param):
            if f"{module[0]}_fsdp" in MODEL_HEADS_REGISTRY:
                module[0] = f"{module[0]}_fsdp"


DINO_EPOCH_KEYS = ("teacher_temp_warmup_epochs", "freeze_last_layer_epochs")


def check_dino_epochs(config) -> None:
    """The plugin's DINO schedules in epochs (:mod:`vissl_issl.plugin.hooks.dino_teacher`): each,
    when set, a number in [0, num_epochs]."""
    if config.LOSS.name != "dino_loss":
        return
    epochs = config.OPTIMIZER.num_epochs
    for name in DINO_EPOCH_KEYS:
        value = config.LOSS.dino_loss.get(name)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= epochs:
            raise ConfigError(f"config.LOSS.dino_loss.{name}={value!r} must be a number of epochs in [0, {epochs}]")


def check_representation_dim(config) -> None:
    """``config.MODEL.REPRESENTATION_DIM`` (z, which recipes interpolate into their heads' input
    widths) must be what the ``tv_resnet`` trunk outputs, or the first forward fails on a shape."""
    from vissl_issl.plugin.trunks import trunk_feature_dim

    given = config.MODEL.get("REPRESENTATION_DIM")
    if given is None or config.MODEL.TRUNK.NAME != "tv_resnet":
        return
    built = trunk_feature_dim(config.MODEL)
    if given != built:
        raise ConfigError(
            f"config.MODEL.REPRESENTATION_DIM={given!r} but the tv_resnet trunk of config.MODEL.TRUNK.TV_RESNET "
            f"outputs {built}-d features; set both (the resizer's OUT_DIM is z when there is a resizer)"
        )


def infer_and_check(config) -> None:
    """Plugin inference on a VISSL ``AttrDict`` config (``cfg.config``), in place."""
    from vissl_issl.schedules import derive_lr_schedule

    label_paths_from_data_paths(config)
    check_fsdp_world_size(config)
    use_fsdp_heads(config)
    derive_lr_schedule(config)
    check_dino_epochs(config)
    check_representation_dim(config)
    clip_value(config.MODEL)
    read_step_options(config)
    check_max_broken_fractions(config)
    infer_device_augmentation(config)
    online_eval_config(config)
    resume_iterations_exactly(config)
    loss_cls = LOSS_REGISTRY.get(config.LOSS.name)
    if hasattr(loss_cls, "infer_config"):
        loss_cls.infer_config(config)
