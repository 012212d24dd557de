"""Starting local processes: forked from the rank server (`Forked`, `forked_run`) or launched for real
(`accelerate_launch`), a free loopback port, waiting on them all, and the environment a child process needs to
import vlp and these helpers."""
from __future__ import annotations

import atexit
import json
import os
import pickle
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Optional

from helpers.zygote import signal_all

ROOT = Path(__file__).resolve().parents[2]
_FOLDER: list[Path] = []  # this test process's folder for its children's logs and arguments, removed at its exit


def _scratch(prefix: str) -> Path:
    """A fresh folder inside this test process's scratch folder."""
    if not _FOLDER:
        _FOLDER.append(Path(tempfile.mkdtemp(prefix="vlp-processes-")))
        atexit.register(shutil.rmtree, _FOLDER[0], True)
    return Path(tempfile.mkdtemp(prefix=prefix, dir=_FOLDER[0]))


def child_env(**extra: str) -> dict[str, str]:
    """This environment with one thread per process and the checkout and tests/ importable (a script run by path
    sees only its own folder)."""
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "tests")]),
            **extra}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def accelerate_launch(recipe: Path, port: int, log, machines: int = 1, machine_rank: int = 0,
                      extra_env: Optional[dict[str, str]] = None) -> subprocess.Popen:
    """`accelerate launch` of `vlp train RECIPE` over 2 processes in all, on CPU (gloo), loopback only."""
    env = child_env(ACCELERATE_USE_CPU="1", **(extra_env or {}))
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
           "--num_machines", str(machines), "--machine_rank", str(machine_rank), "--main_process_ip", "127.0.0.1",
           "--main_process_port", str(port), "--mixed_precision", "no", "--dynamo_backend", "no",
           "-m", "vlp", "train", str(recipe)]
    return subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)


def wait_all(procs: list[subprocess.Popen], timeout: float = 300) -> list[int]:
    try:
        return [p.wait(timeout=timeout) for p in procs]
    finally:
        for p in procs:  # a launcher left waiting for a peer that has gone
            if p.poll() is None:
                p.kill()


class Forked:
    """`python ARGV` as `processes` processes forked from the rank server (`helpers/zygote.py`: torch and vlp
    already imported), each with the environment torchrun gives its ranks when there are several."""
    _server: Optional[subprocess.Popen] = None
    _replies: dict[tuple[int, str], dict] = {}  # read from the server before their caller asked for them
    _count = 0

    def __init__(self, argv: list[str], processes: int = 1, env: Optional[dict[str, str]] = None,
                 timeout: float = 400, cwd: Optional[Path] = None) -> None:
        port, logs = str(free_port()), _scratch("forked-")
        envs = [child_env(**(env or {}), **(_rank_env(rank, processes, port) if processes > 1 else {}))
                for rank in range(processes)]
        self.logs = [[str(logs / f"rank{rank}.{name}") for name in ("out", "err")] for rank in range(processes)]
        Forked._count += 1
        self.id, self.argv, self.timeout, self.statuses = Forked._count, argv, timeout, None
        self._send({"id": self.id, "argv": argv, "cwd": str(cwd or os.getcwd()), "envs": envs, "logs": self.logs,
                    "timeout": timeout})
        self.pids = self._reply("pids")["pids"]

    @classmethod
    def _send(cls, request: dict) -> None:
        if cls._server is None or cls._server.poll() is not None:
            cls._server = subprocess.Popen([sys.executable, str(ROOT / "tests" / "helpers" / "zygote.py")],
                                           env=child_env(), stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        cls._server.stdin.write(json.dumps(request) + "\n")
        cls._server.stdin.flush()

    def _reply(self, kind: str) -> dict:
        while (self.id, kind) not in Forked._replies:
            line = Forked._server.stdout.readline()
            assert line, "the rank server exited"
            reply = json.loads(line)
            Forked._replies[reply["id"], "pids" if "pids" in reply else "statuses"] = reply
        return Forked._replies.pop((self.id, kind))

    def wait(self) -> list[int]:
        """Each process's exit status (negative: the signal that ended it); raises TimeoutExpired past the
        timeout, when the server has killed them."""
        if self.statuses is None:
            reply = self._reply("statuses")
            self.statuses = reply["statuses"]
            if reply["timed_out"]:
                raise subprocess.TimeoutExpired(self.argv, self.timeout, output=self.stderr())
        return self.statuses

    def running(self) -> bool:
        """Whether any of the processes is still alive (the server reaps each within milliseconds of its exit)."""
        for pid in self.pids:
            try:
                os.kill(pid, 0)
                return True
            except ProcessLookupError:
                pass
        return False

    def kill(self) -> None:
        signal_all(self.pids, signal.SIGKILL)

    def stdout(self) -> str:
        return "".join(Path(out).read_text(errors="replace") for out, _ in self.logs)

    def stderr(self) -> str:
        """Every process's stderr in rank order, then one line for each that failed (as torchrun reports it)."""
        text = "".join(Path(err).read_text(errors="replace") for _, err in self.logs)
        for rank, status in enumerate(self.statuses or []):
            if status < 0:
                text += f"rank {rank} (pid {self.pids[rank]}): {signal.Signals(-status).name} received\n"
            elif status > 0:
                text += f"rank {rank} (pid {self.pids[rank]}): exit status {status}\n"
        return text


def _rank_env(rank: int, processes: int, port: str) -> dict[str, str]:
    return {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": port, "WORLD_SIZE": str(processes), "RANK": str(rank),
            "LOCAL_RANK": str(rank), "LOCAL_WORLD_SIZE": str(processes), "GROUP_RANK": "0", "ROLE_RANK": str(rank),
            "ROLE_WORLD_SIZE": str(processes)}


def forked_run(argv: list[str], processes: int = 1, env: Optional[dict[str, str]] = None,
               timeout: float = 400, cwd: Optional[Path] = None) -> subprocess.CompletedProcess:
    """`subprocess.run(python ARGV, capture_output=True, text=True)` over `processes` forked processes; the return
    code is the first failing process's status (0 when all succeed)."""
    forked = Forked(argv, processes, env, timeout, cwd)
    statuses = forked.wait()
    code = next((status for status in statuses if status != 0), 0)
    return subprocess.CompletedProcess(argv, code, forked.stdout(), forked.stderr())


# `spawn`'s child: FUNCTION of the test file PATH called as FUNCTION(rank, *ARGS), ARGS pickled by this process
SPAWNED = """
import os, pickle, sys
from helpers.modules import load_file
path, name, args = sys.argv[1], sys.argv[2], pickle.loads(open(sys.argv[3], "rb").read())
sys.path.insert(0, os.path.dirname(path))  # as pytest imports a test file: its siblings importable
module = load_file(path, "spawned_" + os.path.basename(path)[:-3])
getattr(module, name)(int(os.environ.get("RANK", "0")), *args)
"""


def spawn(fn, args: tuple = (), nprocs: int = 2, timeout: float = 400) -> None:
    """`torch.multiprocessing.spawn(fn, args, nprocs)` over forked processes: `fn(rank, *args)` in each, failing
    with their output when any fails. `fn` is a module-level function of a test file."""
    folder = _scratch("spawn-")
    (folder / "args.pkl").write_bytes(pickle.dumps(args))
    path = sys.modules[fn.__module__].__file__
    done = forked_run(["-c", SPAWNED, path, fn.__name__, str(folder / "args.pkl")], nprocs, timeout=timeout)
    assert done.returncode == 0, done.stderr[-4000:]
