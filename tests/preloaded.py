"""Runs the repository's scripts in processes forked from an interpreter that has imported the plugin.

A digits run through the launcher takes about 15 s on the 2-core machine, 10 s of which is importing
torch, torchvision and VISSL. The server (this file run as a script) does those imports once, with
no thread started and no tensor made, then forks one child per request: the child gets its own
session, working directory, environment, argv and output files, and runs the script as
``__main__``, so everything after the imports happens as in a fresh ``python script.py``. Ranks the
launcher spawns are fresh interpreters, as for users. Of the environment variables read at import
time, ``OMP_NUM_THREADS`` is applied again in the child; the others are the test process's.

Tests that are about a fresh interpreter (the compat shims, VISSL blocked, the multi-node launch)
keep ``subprocess``.
"""

import json
import os
import runpy
import select
import signal
import subprocess
import sys
import tempfile
import traceback
from pathlib import Path
from typing import Dict, List, Optional


def _child(request: dict) -> int:
    """Runs the request's script in this forked process and returns its exit status."""
    os.setsid()  # the test can kill the run and everything it spawned with one killpg
    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(request["env"])
    if "OMP_NUM_THREADS" in os.environ:  # a fresh interpreter reads it when torch loads
        import torch

        torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))
    os.dup2(os.open(os.devnull, os.O_RDONLY), 0)  # never read the server's request pipe
    for fd, path in ((1, request["stdout"]), (2, request["stderr"])):
        os.dup2(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644), fd)
    sys.stdin = open(0, closefd=False)
    sys.stdout = open(1, "w", buffering=1, closefd=False)
    sys.stderr = open(2, "w", buffering=1, closefd=False)
    sys.argv = list(request["argv"])
    try:
        runpy.run_path(sys.argv[0], run_name="__main__")
    except SystemExit as exit:
        if exit.code is None or isinstance(exit.code, int):
            return exit.code or 0
        print(exit.code, file=sys.stderr)
        return 1
    except BaseException:
        traceback.print_exc()
        return 1
    return 0


def serve() -> None:
    import vissl_issl.plugin  # noqa: F401  (the imports every run would repeat)

    replies = sys.stdout
    for line in sys.stdin:
        request = json.loads(line)
        if request["op"] == "start":
            pid = os.fork()
            if pid == 0:
                # Leaves serve() and exits as a script does: atexit handlers, threads, flushes.
                sys.exit(_child(request))
            reply = {"pid": pid}
        else:
            _, status = os.waitpid(request["pid"], 0)
            reply = {"returncode": os.waitstatus_to_exitcode(status)}
        replies.write(json.dumps(reply) + "\n")
        replies.flush()


class Server:
    """Client of one server process; one per pytest process, started on first use."""

    def __init__(self) -> None:
        self.log = tempfile.NamedTemporaryFile(prefix="preloaded-", suffix=".log", delete=False)
        self.process = subprocess.Popen(
            [sys.executable, __file__], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.log, text=True
        )

    def _ask(self, request: dict, timeout: Optional[float] = None) -> Optional[dict]:
        self.process.stdin.write(json.dumps(request) + "\n")
        self.process.stdin.flush()
        ready, _, _ = select.select([self.process.stdout], [], [], timeout)
        if not ready:
            return None
        line = self.process.stdout.readline()
        if not line:
            raise RuntimeError(f"preloaded server died: {Path(self.log.name).read_text()[-3000:]}")
        return json.loads(line)

    def start(self, argv: List[str], cwd: Path, env: Dict[str, str], stdout: Path, stderr: Path) -> int:
        """Starts ``python argv...`` in ``cwd`` and returns its pid (also its process group)."""
        request = {"op": "start", "argv": [str(a) for a in argv], "cwd": str(cwd), "env": env}
        return self._ask({**request, "stdout": str(stdout), "stderr": str(stderr)})["pid"]

    def wait(self, pid: int, timeout: float) -> int:
        """The run's return code; after ``timeout`` seconds its process group is killed (-9)."""
        reply = self._ask({"op": "wait", "pid": pid}, timeout)
        if reply is None:
            os.killpg(pid, signal.SIGKILL)
            reply = json.loads(self.process.stdout.readline())
        return reply["returncode"]

    def run(self, argv: List[str], cwd: Path, env: Dict[str, str], timeout: float = 600) -> subprocess.CompletedProcess:
        """Like ``subprocess.run([sys.executable, *argv], capture_output=True, text=True)``."""
        with tempfile.TemporaryDirectory() as logs:
            stdout, stderr = Path(logs, "stdout"), Path(logs, "stderr")
            returncode = self.wait(self.start(argv, cwd, env, stdout, stderr), timeout)
            return subprocess.CompletedProcess(argv, returncode, stdout.read_text(), stderr.read_text())

    def close(self) -> None:
        self.process.stdin.close()
        self.process.wait(timeout=60)
        os.unlink(self.log.name)


if __name__ == "__main__":
    serve()
