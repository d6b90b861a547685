"""The plugin launcher (argv as tools/run_distributed_engines.py's), SIGKILLed at a chosen point of
its checkpoint writes, as a node losing power would stop it: no clean-up, no exception handlers.

``KILL=write:<k>:<n>`` dies in the k-th checkpoint write once n bytes of it are written;
``KILL=rename:<k>`` dies after the k-th write is complete and fsynced, before its rename.
"""

import os
import runpy
import signal
import sys
from pathlib import Path

from vissl_issl.plugin import checkpointing

LAUNCHER = Path(__file__).resolve().parents[1] / "tools" / "run_distributed_engines.py"
kind, count, *rest = os.environ["KILL"].split(":")
writes = 0


def die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


class DieAfter:
    """A file whose writes kill the process once ``limit`` bytes went through."""

    def __init__(self, file, limit: int):
        self.file, self.left = file, limit

    def write(self, data) -> int:
        if len(data) >= self.left:
            self.file.write(bytes(memoryview(data)[: self.left]))
            self.file.flush()
            die()
        self.left -= len(data)
        return self.file.write(data)

    def __getattr__(self, name):
        return getattr(self.file, name)


def write_atomically(path, write, real=checkpointing.write_atomically):
    global writes
    writes += 1
    if writes == int(count) and kind == "write":
        return real(path, lambda file: write(DieAfter(file, int(rest[0]))))
    if writes == int(count) and kind == "rename":
        os.replace = lambda *args: die()
    return real(path, write)


checkpointing.write_atomically = write_atomically
sys.argv = [str(LAUNCHER), *sys.argv[1:]]
runpy.run_path(str(LAUNCHER), run_name="__main__")
