"""VISSL's checkpoints made kill-safe, and its AUTO_RESUME made to survive a damaged file.

:func:`install_writers` (on ``import vissl_issl.plugin``, so in every rank) and
:func:`install_resume` (on importing the plugin's launcher, which runs VISSL's ``launch_distributed``)
replace functions that VISSL calls by module-level name:

- ``vissl.utils.checkpoint.save_checkpoint`` (classy_vision's, which writes straight to the final
  name despite its "write checkpoint atomically" comment): every phase, iteration, final and
  sharded checkpoint goes through :func:`vissl_issl.atomic_files.write_atomically`;
- ``vissl.utils.checkpoint.create_file_symlink``: ``checkpoint.torch`` is replaced in one rename
  instead of removed then created;
- ``vissl.utils.distributed_launcher.get_resume_checkpoint`` / ``is_training_finished``: VISSL takes
  the highest-numbered file without opening it; :func:`resume_checkpoint` takes the newest that
  loads, warning once about each one it skips.

With ``CHECKPOINT.USE_SYMLINK_CHECKPOINT_FOR_RESUME`` VISSL resumes from ``checkpoint.torch``
without asking; the symlink only ever points at a complete file.
"""

import logging
import re
from pathlib import Path
from typing import List, Optional, Tuple

import torch

from vissl_issl.atomic_files import leftovers, replace_symlink, write_atomically

# VISSL's names: model_phase3.torch, model_iteration120.torch, model_final_checkpoint_phase9.torch
# (FSDP adds _shard<k> files, which the shard_list checkpoint of the same name lists).
CHECKPOINT_NAME = re.compile(r"model_(final_checkpoint_)?(phase|iteration)(\d+)\.torch")


class NoLoadableCheckpointError(RuntimeError):
    """Every checkpoint of a run directory fails to load."""


def save_checkpoint(checkpoint_folder: str, state, checkpoint_file: str) -> str:
    """classy_vision's ``save_checkpoint``, atomic."""
    folder = Path(checkpoint_folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / checkpoint_file
    write_atomically(path, lambda file: torch.save(state, file))
    return str(path)


def create_file_symlink(source: str, link: str) -> None:
    replace_symlink(source, link)


def load_problem(path: Path) -> Optional[str]:
    """Why ``path`` cannot be resumed from (``None`` if it loads), without reading its tensors."""
    try:
        content = torch.load(path, map_location="cpu", mmap=True, weights_only=False)
    except Exception as error:  # what torch raises on damaged files varies: zip, pickle, EOF errors
        return f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"
    if not isinstance(content, dict) or "classy_state_dict" not in content and "shards" not in content:
        return "not a VISSL training checkpoint"
    for shard in content.get("shards", ()):
        problem = load_problem(path.parent / shard)
        if problem:
            return f"its shard {shard}: {problem}"
    return None


def candidates(folder: Path, config) -> List[Path]:
    """VISSL's resume order: the final checkpoint (unless ``OVERWRITE_EXISTING``), then iteration
    checkpoints if ``CHECKPOINT_ITER_FREQUENCY`` > 0, else phase ones, newest first, from the
    ``LATEST_CHECKPOINT_RESUME_FILE_NUM``-th; then the other kind, newest first."""
    found: List[Tuple[bool, str, int, Path]] = []
    for path in folder.glob("model_*.torch"):
        match = CHECKPOINT_NAME.fullmatch(path.name)
        if match:
            found.append((bool(match[1]), match[2], int(match[3]), path))
    checkpoint = config.CHECKPOINT

    def newest(final: bool, kind: str) -> List[Path]:
        return [p for f, k, _, p in sorted(found, key=lambda item: -item[2]) if f == final and k == kind]

    preferred, other = ("iteration", "phase") if checkpoint.CHECKPOINT_ITER_FREQUENCY > 0 else ("phase", "iteration")
    finals = [] if checkpoint.OVERWRITE_EXISTING else newest(True, "phase")
    skip = max(0, checkpoint.LATEST_CHECKPOINT_RESUME_FILE_NUM - 1)
    return finals + newest(False, preferred)[skip:] + newest(False, other)


def resume_checkpoint(folder: Path, config) -> Optional[Path]:
    """The first of :func:`candidates` that loads; ``None`` for a fresh run. Skipped files are
    kept (a person may want them) and named in one warning each."""
    if not config.CHECKPOINT.AUTO_RESUME or not folder.is_dir():
        return None
    for leftover in leftovers(folder):
        logging.info(f"Removing {leftover}, a checkpoint write that was killed before it completed")
        leftover.unlink(missing_ok=True)
    skipped = []
    for path in candidates(folder, config):
        problem = load_problem(path)
        if problem is None:
            return path
        logging.warning(f"Not resuming from {path}: it does not load ({problem}); trying an older checkpoint")
        skipped.append(f"{path.name} ({problem})")
    if skipped:
        raise NoLoadableCheckpointError(
            f"No checkpoint in {folder} loads: {'; '.join(skipped)}. Move them away to train from scratch."
        )
    return None


def get_resume_checkpoint(cfg, checkpoint_folder: str) -> Optional[str]:
    path = resume_checkpoint(Path(checkpoint_folder), cfg)
    if path is not None:
        logging.info(f"Resume from file: {path}")
    return None if path is None else str(path)


def is_training_finished(cfg, checkpoint_folder: str) -> bool:
    """A final checkpoint exists and loads (a damaged one is resumed past, not trusted)."""
    if cfg.CHECKPOINT.OVERWRITE_EXISTING or not Path(checkpoint_folder).is_dir():
        return False
    finals = [path for path in candidates(Path(checkpoint_folder), cfg) if path.name.startswith("model_final")]
    return any(load_problem(path) is None for path in finals[:1])


class ExceptionLogFix(logging.Filter):
    """VISSL's launcher logs ``logging.error("Wrapping up, caught exception: ", e)``, a message
    without a ``%s`` for its argument, so the logging module prints "--- Logging error ---" and a
    traceback of its own instead of the exception."""

    MESSAGE = "Wrapping up, caught exception: "

    def filter(self, record: logging.LogRecord) -> bool:
        if record.msg == self.MESSAGE and record.args:
            record.msg += "%s"
        return True


def resume_iterations_exactly(config) -> None:
    """Iteration checkpoints need VISSL's stateful sampler: its default one restarts a resumed epoch
    from its first batch, so the run trains past its end and VISSL's train step asserts."""
    if config.CHECKPOINT.CHECKPOINT_ITER_FREQUENCY > 0 and not config.DATA.TRAIN.USE_STATEFUL_DISTRIBUTED_SAMPLER:
        logging.info("Iteration checkpoints: config.DATA.TRAIN.USE_STATEFUL_DISTRIBUTED_SAMPLER=True")
        config.DATA.TRAIN.USE_STATEFUL_DISTRIBUTED_SAMPLER = True


def install_writers() -> None:
    from vissl.utils import checkpoint

    checkpoint.save_checkpoint = save_checkpoint
    checkpoint.create_file_symlink = create_file_symlink


def install_resume() -> None:
    # Not at plugin import: distributed_launcher imports vissl.hooks, which VISSL keeps out of
    # module tops (it breaks the MKL threading layer of submitit processes).
    from vissl.utils import distributed_launcher

    distributed_launcher.get_resume_checkpoint = get_resume_checkpoint
    distributed_launcher.is_training_finished = is_training_finished
    root = logging.getLogger()
    if not any(isinstance(existing, ExceptionLogFix) for existing in root.filters):
        root.addFilter(ExceptionLogFix())
