"""The rank server: one process that imports torch, open_clip, accelerate and vlp once, then forks each process a
test starts (`helpers.processes.Forked`) from that state.

Why: a `vlp train` process spends ~5 s of CPU importing before its first step and the tiny runs of the tests train
in about a second, so starting a 2-process run with `torchrun` cost ~7 s of wall time on 2 cores, most of the
multi-process tests' time. A forked child is a real separate process: its own interpreter state, its own gloo
connections, real signals and exit statuses; it runs the same script with the environment variables torchrun gives
each rank. What a library reads from the environment when it is imported (huggingface_hub's HF_HOME and
HF_ENDPOINT) is the server's, so a test that changes such a variable starts a real interpreter. The launchers themselves (`torchrun`, `accelerate launch`, two launchers of one machine each) keep their
own tests, which start them for real.

Protocol, JSON lines over stdin/stdout; requests may overlap (a test's second trainer beside a paused first one):
{"id", "argv", "cwd", "envs", "logs", "timeout"} (per process one environment and a [stdout, stderr] pair of log
files; argv as python's: `-c CODE ARGS`, `-m MODULE ARGS` or `SCRIPT ARGS`) → {"id", "pids"} once forked →
{"id", "statuses", "timed_out"} once all have exited. Statuses are subprocess return codes (a
negative number is the signal that ended the process).

Like torchrun, when a process fails the others are stopped: after GRACE seconds (a peer usually notices the lost
gloo connection and exits by itself first) SIGTERM, and SIGKILL after KILL_AFTER more.
"""
from __future__ import annotations

import faulthandler
import importlib
import json
import os
import runpy
import select
import signal
import sys
import threading
import time
import traceback
import types

PRELOAD = ("torch", "accelerate", "open_clip", "webdataset", "safetensors.torch", "torch.distributed.checkpoint",
           "vlp.cli", "vlp.train.cli", "vlp.train.loop", "vlp.train.setup", "vlp.train.components",
           "vlp.train.sharded_checkpoint", "vlp.train.fsdp_wrap", "vlp.train.trackers", "vlp.train.remote",
           "vlp.data.train_data", "vlp.models.build", "vlp.objectives.builder", "vlp.evaluate.tasks")
GRACE, KILL_AFTER, POLL = 10.0, 30.0, 0.01


def _run_argv(argv: list[str]) -> None:
    """Run argv as `python ARGV` would, in this process."""
    if argv[0] == "-c":
        sys.argv = ["-c", *argv[2:]]
        main = sys.modules["__main__"] = types.ModuleType("__main__")  # not the server's module
        exec(compile(argv[1], "<string>", "exec"), main.__dict__)
    elif argv[0] == "-m":
        sys.argv = [argv[1], *argv[2:]]
        runpy.run_module(argv[1], run_name="__main__", alter_sys=True)
    else:
        sys.argv = list(argv)
        sys.path.insert(0, os.path.dirname(os.path.abspath(argv[0])))
        runpy.run_path(argv[0], run_name="__main__")


def _child(argv: list[str], cwd: str, env: dict[str, str], logs: list[str]) -> None:
    """In the forked child: the request's directory, environment and log files in place of the server's, then the
    program; never returns."""
    os.chdir(cwd)
    os.environ.clear()
    os.environ.update(env)
    # the server's sys.path came from its own PYTHONPATH; a request may name more (a test's plugin folder)
    sys.path[:0] = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p and p not in sys.path]
    for fd, path in enumerate([os.devnull, *logs]):
        opened = os.open(path, os.O_RDONLY) if fd == 0 else os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
        os.dup2(opened, fd)
        os.close(opened)
    sys.stdin = open(0, closefd=False)
    sys.stdout = open(1, "w", buffering=1, closefd=False)
    sys.stderr = open(2, "w", buffering=1, closefd=False)
    faulthandler.enable()  # a crash in native code still leaves its Python stack in the log
    code = 0
    try:
        import torch
        torch.set_num_threads(int(env.get("OMP_NUM_THREADS", "1")))
        _run_argv(argv)
    except SystemExit as stop:
        if isinstance(stop.code, int) or stop.code is None:
            code = stop.code or 0
        else:
            print(stop.code, file=sys.stderr)
            code = 1
    except BaseException:
        traceback.print_exc()
        code = 1
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    os._exit(code)


def _fork(request: dict, env: dict[str, str], logs: list[str]) -> int:
    pid = os.fork()
    if pid == 0:
        _child(request["argv"], request["cwd"], env, logs)
    return pid


def _status(raw: int) -> int:
    return -os.WTERMSIG(raw) if os.WIFSIGNALED(raw) else os.WEXITSTATUS(raw)


class _Group:
    """The processes of one request: reaped as they exit; the rest stopped once one fails, or all at the timeout."""

    def __init__(self, pids: list[int], timeout: float) -> None:
        self.pids, self.statuses = pids, {}
        self.deadline, self.failed_at, self.termed = time.monotonic() + timeout, None, False

    def done(self) -> bool:
        for pid in self.pids:
            if pid not in self.statuses:
                reaped, raw = os.waitpid(pid, os.WNOHANG)
                if reaped:
                    self.statuses[pid] = _status(raw)
                    if self.statuses[pid] != 0 and self.failed_at is None:
                        self.failed_at = time.monotonic()
        now, running = time.monotonic(), [p for p in self.pids if p not in self.statuses]
        if running and (now > self.deadline or (self.failed_at is not None and now > self.failed_at + GRACE + KILL_AFTER)):
            signal_all(running, signal.SIGKILL)
        elif running and self.failed_at is not None and now > self.failed_at + GRACE and not self.termed:
            signal_all(running, signal.SIGTERM)
            self.termed = True
        return not running

    def reply(self) -> dict:
        return {"statuses": [self.statuses[pid] for pid in self.pids], "timed_out": time.monotonic() > self.deadline}


def signal_all(pids: list[int], sig: int) -> None:
    """SIG to each of PIDS that still runs."""
    for pid in pids:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass


def serve() -> None:
    for name in PRELOAD:
        importlib.import_module(name)
    if threading.active_count() > 1:  # a fork copies only the calling thread: another one's locks could hang a child
        print(f"zygote: {threading.active_count()} threads after the imports", file=sys.stderr, flush=True)
    replies = sys.stdout
    sys.stdout = sys.stderr  # nothing but replies on the protocol pipe
    groups: dict[int, _Group] = {}
    pending, reading = b"", True

    def send(message: dict) -> None:
        replies.write(json.dumps(message) + "\n")
        replies.flush()

    while reading or groups:
        if reading and select.select([0], [], [], POLL)[0]:
            chunk = os.read(0, 1 << 16)
            reading, pending = bool(chunk), pending + chunk
            while b"\n" in pending:
                line, pending = pending.split(b"\n", 1)
                request = json.loads(line)
                pids = [_fork(request, env, logs) for env, logs in zip(request["envs"], request["logs"])]
                groups[request["id"]] = _Group(pids, request["timeout"])
                send({"id": request["id"], "pids": pids})
            if not reading:  # the tests have ended: nobody is left to wait for these
                for group in groups.values():
                    signal_all([p for p in group.pids if p not in group.statuses], signal.SIGKILL)
        elif not reading:
            time.sleep(POLL)
        for key, group in list(groups.items()):
            if group.done():
                send({"id": key, **group.reply()})
                del groups[key]


if __name__ == "__main__":
    serve()
