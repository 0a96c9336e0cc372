"""CLI calls for the tests, each in a process forked from one that has already imported chipclear.

A CLI call in a fresh interpreter spends most of its time importing (docs/performance.md, "CLI start-up"),
and the CLI tests make hundreds of calls. Here one server process per test process imports every chipclear
module once, then forks a child per call: the child takes the call's arguments, environment and working
directory, reads /dev/null and writes two files, and runs the console script's entry point
(`chipclear.cli.main:main`) to its `os._exit`, as `chipclear` does. What it prints and its exit code are
the command's own. The server starts no thread before it forks (checked at start), so each child is a
clean copy. The tests of start-up and of interpreter exit, and any call with a `PYTHON*` setting of its
own, start a fresh interpreter instead (`tests.cli.test_cli.chipclear`).

Run as `python -m tests.cli.forked SOCKET`: it listens on the Unix socket and prints `ready` once loaded.
"""

from __future__ import annotations

import atexit
import contextlib
import importlib
import json
import os
import pkgutil
import selectors
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import types
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]


# -- the server ---------------------------------------------------------------------------------------
@dataclass
class _Call:
    conn: socket.socket
    out: str
    err: str
    pidfd: int


def _preload() -> None:
    """Every chipclear module, so that no call imports one (a command imports what it needs lazily)."""
    import chipclear

    for module in pkgutil.walk_packages(chipclear.__path__, "chipclear."):
        importlib.import_module(module.name)
    tasks = len(os.listdir("/proc/self/task"))
    if threading.active_count() != 1 or tasks != 1:
        raise SystemExit(f"importing chipclear started threads ({tasks} tasks): forking would not be safe")


def _child(request: dict[str, Any], out: str, err: str) -> None:
    """Become the call: its directory, environment, standard streams and arguments; then the CLI."""
    try:
        os.chdir(request["cwd"])
        os.environ.clear()
        os.environ.update(request["env"])
        for fd, path, flags in ((0, os.devnull, os.O_RDONLY), (1, out, os.O_WRONLY), (2, err, os.O_WRONLY)):
            opened = os.open(path, flags)
            os.dup2(opened, fd)
            os.close(opened)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        time.tzset()
        # The CLI's consoles read the environment (COLUMNS, NO_COLOR…) and their streams when made, at
        # import, in this server: the module is run again for the call's (every user names its
        # consoles through the module, `output.console`).
        from chipclear.cli import output

        importlib.reload(output)
        sys.argv = request["argv"]
        # The console script is a plain file run as __main__: click names the program after argv[0]
        # only when __main__ was not run with `-m`, as this server was.
        script = types.ModuleType("__main__")
        script.__file__ = request["argv"][0]
        sys.modules["__main__"] = script
        from chipclear.cli.main import main

        main()  # leaves by os._exit
    finally:
        os._exit(70)


def serve(path: str) -> None:
    _preload()
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(64)
    selector = selectors.DefaultSelector()
    selector.register(listener, selectors.EVENT_READ)
    calls: dict[int, _Call] = {}
    print("ready", flush=True)
    parent = os.getppid()
    while os.getppid() == parent:  # the test process is gone: so is its server
        for key, _ in selector.select(timeout=1.0):
            if key.fileobj is listener:
                conn, _ = listener.accept()
                request = json.loads(conn.makefile("rb").readline())
                out_fd, out = tempfile.mkstemp(prefix="chipclear-out-")
                err_fd, err = tempfile.mkstemp(prefix="chipclear-err-")
                os.close(out_fd)
                os.close(err_fd)
                pid = os.fork()
                if pid == 0:
                    for call in calls.values():
                        os.close(call.pidfd)
                        call.conn.close()
                    selector.close()
                    listener.close()
                    conn.close()
                    _child(request, out, err)
                pidfd = os.pidfd_open(pid)
                selector.register(pidfd, selectors.EVENT_READ, pid)
                calls[pid] = _Call(conn, out, err, pidfd)
                conn.sendall(json.dumps({"pid": pid}).encode() + b"\n")
            else:
                pid = key.data
                call = calls.pop(pid)
                selector.unregister(call.pidfd)
                os.close(call.pidfd)
                _, status = os.waitpid(pid, 0)
                answer = {
                    "code": os.waitstatus_to_exitcode(status),
                    "stdout": Path(call.out).read_bytes().decode(errors="replace"),
                    "stderr": Path(call.err).read_bytes().decode(errors="replace"),
                }
                os.unlink(call.out)
                os.unlink(call.err)
                with contextlib.suppress(OSError):  # the caller gave up (a timeout)
                    call.conn.sendall(json.dumps(answer).encode() + b"\n")
                call.conn.close()


# -- the client ---------------------------------------------------------------------------------------
class Server:
    """A forking server for this test process, started with the environment given (the test process's
    own, less any Temporal or chipclear setting) and stopped when the process ends."""

    def __init__(self, env: dict[str, str] | None = None) -> None:
        if env is None:
            env = {k: v for k, v in os.environ.items() if not k.startswith(("TEMPORAL_", "CHIPCLEAR_"))}
        self.folder = tempfile.mkdtemp(prefix="chipclear-forked-")  # private (0700): the socket's home
        self.path = os.path.join(self.folder, "cli.sock")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tests.cli.forked", self.path],
            cwd=ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
        )
        assert self.process.stdout is not None
        if self.process.stdout.readline().strip() != b"ready":
            raise RuntimeError(f"the forking CLI server did not start (exit {self.process.wait()})")
        atexit.register(self.stop)

    def stop(self) -> None:
        self.process.kill()
        self.process.wait()
        shutil.rmtree(self.folder, ignore_errors=True)

    def run(
        self, argv: list[str], env: dict[str, str], timeout: float, cwd: Path | None = None
    ) -> subprocess.CompletedProcess[str]:
        """Like `subprocess.run(argv, env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout)`."""
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.connect(self.path)
            sock.sendall(
                json.dumps({"argv": argv, "env": env, "cwd": str(cwd or Path.cwd())}).encode() + b"\n"
            )
            sock.settimeout(timeout)
            answers = sock.makefile("rb")
            pid = json.loads(answers.readline())["pid"]
            try:
                answer = json.loads(answers.readline())
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
                raise subprocess.TimeoutExpired(argv, timeout) from None
        return subprocess.CompletedProcess(argv, answer["code"], answer["stdout"], answer["stderr"])


_LOCK = threading.Lock()
_SERVER: Server | None = None


def run(
    argv: list[str], env: dict[str, str], timeout: float, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    """`argv` run by this test process's server, started at its first call."""
    global _SERVER
    with _LOCK:
        if _SERVER is None or _SERVER.process.poll() is not None:
            _SERVER = Server()
    return _SERVER.run(argv, env, timeout, cwd)


if __name__ == "__main__":
    serve(sys.argv[1])
