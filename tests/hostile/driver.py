"""Run `archdsl` command lines, each in a child process with limits on its memory, CPU and wall
time; report how each ended (tests/cli/test_hostile_corpus.py).

    python tests/hostile/driver.py < cases.json > results.json

`cases.json` is a list of {"id": str, "args": [str, ...]} (with "memory": bytes of address
space, for a case that imports PyTorch, whose libraries map more than the default). archdsl's
CLI is imported once; each case runs in a fork of this process (cheap: no second import),
whose memory (RLIMIT_AS) and CPU time (RLIMIT_CPU) are limited as a preexec_fn would, and
which is killed at the wall-clock limit. The result of each: {"id", "status" (exit code, or
-signal), "seconds", "stdout", "stderr", "peak_kib" (the child's peak resident memory)}.
"""

from __future__ import annotations

import contextlib
import json
import os
import resource
import signal
import sys
import tempfile
import time
import traceback

MEMORY = 2 << 30  # bytes of address space per case
CPU_SECONDS = 60
WALL_SECONDS = 60


def run(args: list[str], memory: int = MEMORY) -> dict:
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        started = time.monotonic()
        pid = os.fork()
        if pid == 0:  # the child
            _child(args, out.fileno(), err.fileno(), memory)
        status, usage = _wait(pid, started + WALL_SECONDS)
        seconds = time.monotonic() - started
        out.seek(0)
        err.seek(0)
        return {"status": status, "seconds": round(seconds, 3),
                "stdout": out.read().decode("utf-8", "replace"),
                "stderr": err.read().decode("utf-8", "replace"),
                "peak_kib": usage.ru_maxrss if usage else None}


def _child(args: list[str], out: int, err: int, memory: int) -> None:
    code = 99
    try:
        os.dup2(out, 1)
        os.dup2(err, 2)
        resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
        resource.setrlimit(resource.RLIMIT_CPU, (CPU_SECONDS, CPU_SECONDS + 5))
        sys.argv = ["archdsl", *args]
        from archdsl.cli import main
        try:
            main()
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except BaseException:  # what the CLI let through: the test fails on the traceback
        traceback.print_exc()
        code = 99
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def _wait(pid: int, deadline: float):
    while True:
        done, status, usage = os.wait4(pid, os.WNOHANG)
        if done:
            return (os.WEXITSTATUS(status) if os.WIFEXITED(status)
                    else -os.WTERMSIG(status)), usage
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            _, status, usage = os.wait4(pid, 0)
            return "timeout", usage
        time.sleep(0.005)


def main() -> None:
    # everything a command needs is loaded once, before the forks: the CLI (its first run
    # imports and builds most of what a command uses), the parser's tables
    from archdsl.cli import app
    with tempfile.TemporaryDirectory() as tmp, open(os.devnull, "w") as null, \
            contextlib.redirect_stdout(null), contextlib.redirect_stderr(null):
        spec = os.path.join(tmp, "warm.arch")
        with open(spec, "w") as fh:
            fh.write("arch warm\ninput 1x4x4\nconv3-2; gap; FC-2\n")
        for args in (["check", spec], ["stats", spec, "--per-layer"], ["format", spec]):
            try:
                app(args)
            except SystemExit:
                pass
    # ARCHDSL_DRIVER_PRELOAD=pytorch.importer: backends loaded once here too (torch takes
    # seconds to import; each case would pay it again)
    from archdsl.backends import load_backend
    for name in filter(None, os.environ.get("ARCHDSL_DRIVER_PRELOAD", "").split(",")):
        load_backend(name)
    cases = json.load(sys.stdin)
    results = [{"id": case["id"], **run(case["args"], case.get("memory", MEMORY))}
               for case in cases]
    json.dump(results, sys.stdout)


if __name__ == "__main__":
    main()
