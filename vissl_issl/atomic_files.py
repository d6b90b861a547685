"""Files that a kill at any instant leaves either old or new, never partial.

A file is written under a hidden temporary name in its own directory, flushed and fsynced, then
renamed over its name (``rename`` is atomic within a file system), and the directory is fsynced so
the rename survives a power loss too. A symbolic link is replaced the same way.
"""

import errno
import os
import shutil
from pathlib import Path
from typing import BinaryIO, Callable, Iterator, Union

PathLike = Union[str, Path]
PARTIAL = ".partial-"


class DiskFullError(OSError):
    """A write that ran out of space; the file it was replacing is untouched."""


def temporary_name(path: Path) -> Path:
    # Hidden and without the final suffix, so that no scan for ``*.torch`` files ever sees it.
    return path.with_name(f".{path.name}{PARTIAL}{os.getpid()}")


def fsync_directory(directory: Path) -> None:
    descriptor = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def out_of_space(error: BaseException) -> bool:
    """Whether ``error`` or an error it was raised while handling is ENOSPC: torch.save reports a
    failed write as "unexpected pos" from its zip writer's clean-up, the ENOSPC as its context."""
    while error is not None:
        if isinstance(error, OSError) and error.errno == errno.ENOSPC:
            return True
        error = error.__cause__ or error.__context__
    return False


def write_atomically(path: PathLike, write: Callable[[BinaryIO], None]) -> None:
    """``write(file)`` into a temporary file next to ``path``, then rename it over ``path``.

    On any error (a full disk included, raised as :class:`DiskFullError`) the temporary file is
    removed and ``path`` keeps its previous content."""
    path = Path(path)
    temporary = temporary_name(path)
    try:
        with open(temporary, "wb") as file:
            write(file)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException as error:
        temporary.unlink(missing_ok=True)
        if out_of_space(error):
            free = shutil.disk_usage(path.parent).free
            raise DiskFullError(
                errno.ENOSPC,
                f"No space left on device while writing {path} ({free / 2**20:.0f} MiB free); "
                f"{'its previous version is intact' if path.exists() else 'nothing was written under its name'}",
            ) from error
        raise
    fsync_directory(path.parent)


def replace_symlink(target: PathLike, link: PathLike) -> None:
    """Point ``link`` at ``target``, replacing any previous link in one rename."""
    link = Path(link)
    temporary = temporary_name(link)
    temporary.unlink(missing_ok=True)
    os.symlink(target, temporary)
    os.replace(temporary, link)
    fsync_directory(link.parent)


def leftovers(directory: PathLike) -> Iterator[Path]:
    """Temporary files of writers that were killed before their rename."""
    return Path(directory).glob(f".*{PARTIAL}*")
