"""A pre-imported template process (a zygote) that forks function replicas, so a cold start is a fork plus a model load.

A fresh ``python -m hydro_serving.runtime`` spends most of its start importing Python, flask,
gunicorn and the template's framework (sklearn: ~0.7 s of a ~0.75 s floor on a quiet machine);
the model load itself is tens of milliseconds. The zygote pays the imports once per template and
then, for every replica, forks a child that already has them.

``python -m hydro_serving.runtime.zygote --template NAME --fd N [--preload MOD ...]`` is started by
the gateway's local provider (:mod:`hydro_serving.gateway.providers.spawner`) with one end of a
socketpair as fd ``N``: only the gateway can ask it for anything, and it needs no socket file.
The protocol is JSON lines:

* zygote -> gateway, once imports are done: ``{"event": "ready", "pid", "preloaded", "failed", "seconds"}``;
* gateway -> zygote: ``{"op": "spawn", "id", "argv", "env_file", "cwd", "log", "sandbox"}`` where
  ``argv`` are the arguments of ``python -m hydro_serving.runtime``, ``env_file`` a 0600 JSON file
  with the replica's environment (read by the child only: the zygote, shared by every function of
  its template, never holds a function's variables) and ``sandbox`` a
  :class:`hydro_serving.replica.sandbox.Plan`; answered ``{"reply": id, "pid": N}`` or
  ``{"reply": id, "error": "..."}``;
* zygote -> gateway, when a child exits: ``{"event": "exit", "pid": N, "code": C}`` (``C`` as
  :attr:`subprocess.Popen.returncode`: negative for a signal). The zygote is the children's parent,
  so it alone can reap them and know their status.

A child ``setsid()``s (its process group is the replica, which the gateway signals as a whole),
dies with the zygote (``PR_SET_PDEATHSIG``; the zygote itself dies with the gateway, so a killed
gateway leaves nothing behind), writes stdout/stderr to the function's log, gets exactly the
environment the gateway computed for the function, enters the function's sandbox (a private
mount view, then its own uid or a user namespace: see :mod:`hydro_serving.replica.sandbox`), and
then runs the same ``main()`` as ``python -m hydro_serving.runtime``. End of file on the socket
(the gateway closed it or died) makes the zygote stop its children and exit.

The zygote stays single-threaded (a fork copies only the calling thread, so a lock held by another
thread would stay locked forever in the child) and configures no logging (the child's
``logging.basicConfig`` must find a fresh root logger).
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import importlib
import json
import os
import selectors
import signal
import socket
import sys
import threading
import time
import traceback
import warnings
from typing import Any, NoReturn

from hydro_serving.replica import sandbox
from hydro_serving.runtime.process import die_with_parent, set_process_name

ZYGOTE_NAME = "hydro-zygote"  # its /proc/<pid>/comm
STOP_GRACE = 10.0  # seconds the children get between SIGTERM and SIGKILL when the zygote stops

# What every replica imports before its model loads, whatever the template: the runtime, its HTTP
# stack and the gunicorn parts that the arbiter would otherwise import lazily at start.
RUNTIME_MODULES = (
    "hydro_serving.runtime.__main__", "hydro_serving.runtime.server", "hydro_serving.runtime.app",
    "hydro_serving.runtime.service", "hydro_serving.runtime.loader", "hydro_serving.contract.v2",
    "hydro_serving.contract.dtypes", "gunicorn.arbiter", "gunicorn.workers.gthread", "gunicorn.glogging",
    "gunicorn.http.wsgi",
)


def _say(message: str) -> None:
    print(f"[zygote {os.getpid()}] {message}", file=sys.stderr, flush=True)


def preload(template_name: str, modules: list[str]) -> tuple[list[str], list[str]]:
    """Import the runtime, the template's handler module and ``modules``; return (imported, failed).

    A module that fails to import is reported, not fatal: the replica then imports it itself and
    fails with the real error in the function's log, exactly as without a zygote.
    """
    done: list[str] = []
    failed: list[str] = []
    for name in RUNTIME_MODULES:
        importlib.import_module(name)
    try:
        from hydro_serving.runtime.loader import import_entrypoint
        from hydro_serving.templates import get_template

        import_entrypoint(get_template(template_name))  # cached in sys.modules under its private name
        done.append(f"template:{template_name}")
    except Exception as exc:
        failed.append(f"template:{template_name}: {type(exc).__name__}: {exc}")
    for name in modules:
        try:
            importlib.import_module(name)
            done.append(name)
        except Exception as exc:
            failed.append(f"{name}: {type(exc).__name__}: {exc}")
    try:  # the spec validator (jsonschema and its compiled schema, cached): ~50 ms of every replica's start
        from hydro_serving.stack.model import FunctionSpec

        FunctionSpec.from_dict({"name": "zygote-warmup", "lang": template_name}, where="zygote warm-up")
        done.append("spec-validator")
    except Exception as exc:
        failed.append(f"spec-validator: {type(exc).__name__}: {exc}")
    if threading.active_count() > 1:  # a fork would copy a process whose other threads vanish
        failed.append(f"threads: {threading.active_count()} Python threads after the imports; forks may hang")
    return done, failed


class Zygote:
    """The zygote's loop: spawn requests in, exit events out, over one connected socket."""

    def __init__(self, conn: socket.socket) -> None:
        self.conn = conn
        self.children: set[int] = set()
        self.buffer = b""
        self.selector = selectors.DefaultSelector()
        self.wake_r, self.wake_w = os.pipe()
        os.set_blocking(self.wake_w, False)
        os.set_blocking(self.wake_r, False)

    def send(self, message: dict[str, Any]) -> None:
        with contextlib.suppress(OSError):  # the gateway is gone: the loop sees EOF next
            self.conn.sendall(json.dumps(message).encode() + b"\n")

    def run(self) -> None:
        signal.set_wakeup_fd(self.wake_w)
        signal.signal(signal.SIGCHLD, lambda *_: None)  # a handler (not SIG_IGN) so children stay reapable
        signal.signal(signal.SIGTERM, lambda *_: None)  # wakes the loop; stopping is decided there
        stop = {"term": False}
        self.selector.register(self.conn, selectors.EVENT_READ, "conn")
        self.selector.register(self.wake_r, selectors.EVENT_READ, "wake")
        try:
            while not stop["term"]:
                for key, _ in self.selector.select():
                    if key.data == "wake":
                        signals = os.read(self.wake_r, 512)
                        if signal.SIGTERM in signals:
                            stop["term"] = True
                        self.reap()
                    elif not self.read_requests():
                        stop["term"] = True
        finally:
            self.stop_children()

    def read_requests(self) -> bool:
        """Handle every complete request line; False at end of file (the gateway closed the socket)."""
        try:
            data = self.conn.recv(1 << 20)
        except InterruptedError:
            return True
        except OSError:
            return False
        if not data:
            return False
        self.buffer += data
        while b"\n" in self.buffer:
            line, self.buffer = self.buffer.split(b"\n", 1)
            if line.strip():
                self.handle(json.loads(line))
        return True

    def handle(self, request: dict[str, Any]) -> None:
        if request.get("op") != "spawn":
            self.send({"reply": request.get("id"), "error": f"unknown op {request.get('op')!r}"})
            return
        try:
            pid = self.fork(request)
        except OSError as exc:
            self.send({"reply": request["id"], "error": f"fork failed: {exc.strerror or exc}"})
            return
        self.children.add(pid)
        self.send({"reply": request["id"], "pid": pid})

    def fork(self, request: dict[str, Any]) -> int:
        """Fork a child that becomes the replica; returns its pid (in the zygote)."""
        parent = os.getpid()
        log_fd = os.open(request["log"], os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW, 0o600)
        try:
            sys.stdout.flush()
            sys.stderr.flush()
            pid = os.fork()
            if pid == 0:
                self.become_replica(request, parent, log_fd)
            return pid
        finally:
            os.close(log_fd)

    def become_replica(self, request: dict[str, Any], parent: int, log_fd: int) -> NoReturn:
        """In the child: detach, take the function's log and environment, enter its sandbox, run main()."""
        code = 1
        try:
            os.setsid()
            die_with_parent(parent)
            with open(request["env_file"], "rb") as fh:  # before the sandbox: the replica's user cannot read it
                env = json.loads(fh.read())
            with contextlib.suppress(OSError):  # read once, by this child only
                os.unlink(request["env_file"])
            set_process_name(f"hydro:{env.get('HYDRO_FUNCTION_NAME', 'replica')}")
            signal.set_wakeup_fd(-1)
            for sig in (signal.SIGCHLD, signal.SIGTERM):
                signal.signal(sig, signal.SIG_DFL)
            signal.signal(signal.SIGINT, signal.default_int_handler)
            self.selector.close()
            self.conn.close()
            os.close(self.wake_r)
            os.close(self.wake_w)
            devnull = os.open(os.devnull, os.O_RDONLY)
            os.dup2(devnull, 0)
            os.close(devnull)
            os.dup2(log_fd, 1)
            os.dup2(log_fd, 2)
            os.close(log_fd)
            sandbox.enter(sandbox.Plan.from_dict(request["sandbox"]))
            die_with_parent(parent)  # again: the kernel clears the death signal when the uid changes
            os.chdir(request["cwd"])
            os.environ.clear()
            os.environ.update(env)
            sys.path[0] = request["cwd"]  # what `python -m` puts first: the working directory
            if "numpy" in sys.modules:  # a fresh process would have a fresh seed; don't share the zygote's
                sys.modules["numpy"].random.seed()
            from hydro_serving.runtime import __main__ as runtime_main

            sys.argv = [runtime_main.__file__, *request["argv"]]
            runtime_main.main(list(request["argv"]))
            code = 0
        except SystemExit as exc:
            if isinstance(exc.code, str):
                print(exc.code, file=sys.stderr)
                code = 1
            else:
                code = exc.code or 0
        except BaseException:
            traceback.print_exc()
            code = 1
        finally:
            with contextlib.suppress(Exception):
                sys.stdout.flush()
                sys.stderr.flush()
            os._exit(code)

    def reap(self) -> None:
        while self.children:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                self.children.clear()
                return
            if pid == 0:
                return
            self.children.discard(pid)
            self.send({"event": "exit", "pid": pid, "code": os.waitstatus_to_exitcode(status)})

    def stop_children(self) -> None:
        """SIGTERM every child's process group, SIGKILL what is left after the grace, reap all."""
        for sig, grace in ((signal.SIGTERM, STOP_GRACE), (signal.SIGKILL, 5.0)):
            for pid in list(self.children):
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(pid, sig)
            deadline = time.monotonic() + grace
            while self.children and time.monotonic() < deadline:
                self.reap()
                time.sleep(0.02)
            if not self.children:
                return


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m hydro_serving.runtime.zygote",
                                     description="Fork replicas of one template from a pre-imported process.")
    parser.add_argument("--template", required=True, help="the runtime template whose handler module to import")
    parser.add_argument("--fd", type=int, required=True, help="the connected socket to the gateway")
    parser.add_argument("--parent", type=int, default=0, help="die when this pid (the gateway) goes")
    parser.add_argument("--preload", action="append", default=[], help="a module to import (repeatable)")
    args = parser.parse_args(argv)
    if args.parent:
        die_with_parent(args.parent)
    set_process_name(ZYGOTE_NAME)
    # a fork after the framework's native thread pools started (OpenBLAS) is safe: they re-create
    # themselves in the child (pthread_atfork); Python >= 3.12 would still warn on every fork
    warnings.filterwarnings("ignore", message=r".*multi-threaded.*fork", category=DeprecationWarning)
    conn = socket.socket(fileno=args.fd)
    started = time.monotonic()
    done, failed = preload(args.template, args.preload)
    seconds = time.monotonic() - started
    _say(f"template {args.template}: imported {', '.join(done) or 'nothing'} in {seconds:.3f}s"
         + (f"; failed: {'; '.join(failed)}" if failed else ""))
    # move what the imports built out of the collector's reach: a child's collections then do not
    # touch (and copy-on-write) the pages it shares with the zygote
    gc.collect()
    gc.freeze()
    zygote = Zygote(conn)
    zygote.send({"event": "ready", "pid": os.getpid(), "preloaded": done, "failed": failed, "seconds": seconds})
    zygote.run()
    _say("stopped")


if __name__ == "__main__":
    main()
