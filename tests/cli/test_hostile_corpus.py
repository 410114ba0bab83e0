"""A corpus of hostile and broken inputs through the `archdsl` command line (issue #13).

Every case ends within a time and memory bound (each in a child process with RLIMIT_AS, RLIMIT_CPU
and a wall-clock limit: tests/hostile/driver.py), with exit status 0, 1 or 2, never a traceback
or an "internal error", and never an escape sequence on the terminal. A case that is an error
says what the file's `# expect:` line says, located (`file:line:col: error:`) where it is about
the text. The corpus is tests/hostile/corpus/*.arch, plus files made here that cannot be
committed (devices, FIFOs, a file of more than a megabyte, hundreds of includes).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CORPUS = ROOT / "tests" / "hostile" / "corpus"
DRIVER = ROOT / "tests" / "hostile" / "driver.py"
SECONDS = 30          # each case, on a loaded 2-core CI machine (most take under a second)
PEAK_KIB = 1 << 20    # each case's resident memory: 1 GiB
HEAD = "arch a\ninput 3x8x8\n"


def _expectation(path: Path) -> str:
    first = path.read_bytes().split(b"\n", 1)[0].decode("utf-8", "replace")
    assert first.startswith("# expect: "), path
    return first.removeprefix("# expect: ")


def _corpus_cases() -> list[dict]:
    cases = []
    for path in sorted(CORPUS.glob("*.arch")):
        expect = _expectation(path)
        cases.append({"id": f"check {path.name}", "args": ["check", str(path)],
                      "expect": expect, "located": path.stem != "not_utf8"})
        if expect == "ok":  # what passes is also shown: tables and the canonical form
            for command in (["stats", "--per-layer"], ["stats", "-f", "markdown"], ["format"]):
                cases.append({"id": f"{' '.join(command)} {path.name}",
                              "args": [command[0], str(path), *command[1:]], "expect": "ok"})
    return cases


def _made_cases(tmp: Path) -> list[dict]:
    """Inputs that cannot live in the repository."""
    fifo = tmp / "fifo.arch"
    os.mkfifo(fifo)
    (tmp / "inc_fifo.arch").write_text('include "fifo.arch"\n' + HEAD + "relu\n")
    (tmp / "zero.arch").symlink_to("/dev/zero")
    (tmp / "inc_zero.arch").write_text('include "zero.arch"\n' + HEAD + "relu\n")
    (tmp / "big.arch").write_text(HEAD + "relu\n" * 300_000)  # 1.5 MB
    (tmp / "errors.arch").write_text(HEAD + "cnv3\n" * 5_000)
    (tmp / "syntax.arch").write_text(HEAD + "relu )\n" * 5_000)
    (tmp / "long_line.arch").write_text(HEAD + "cnv3  # " + "x" * 600_000 + "\n")
    many = tmp / "many"
    many.mkdir()
    for i in range(300):
        (many / f"f{i}.arch").write_text(f'include "f{i + 1}.arch"\n')
    (many / "f300.arch").write_text(HEAD + "relu\n")
    (tmp / "k.arch").write_text("arch k(k = 1, s = x)\ninput 3x8x8\nconv3-{k}\n")
    values = ",".join(str(i) for i in range(1, 40))
    return [
        {"id": "spec /dev/zero", "args": ["check", "/dev/zero"], "expect": "device"},
        {"id": "spec /dev/urandom", "args": ["check", "/dev/urandom"], "expect": "device"},
        {"id": "spec FIFO", "args": ["check", str(fifo)], "expect": "FIFO"},
        {"id": "include FIFO", "args": ["check", str(tmp / "inc_fifo.arch")], "expect": "FIFO",
         "located": True},
        {"id": "include link to /dev/zero", "args": ["check", str(tmp / "inc_zero.arch")],
         "expect": "escapes", "located": True},
        {"id": "spec folder", "args": ["stats", str(tmp)], "expect": "folder"},
        {"id": "spec missing", "args": ["format", str(tmp / "nope.arch")],
         "expect": "No such file"},
        {"id": "spec too large", "args": ["check", str(tmp / "big.arch")], "expect": "limit"},
        {"id": "5000 errors", "args": ["check", str(tmp / "errors.arch")],
         "expect": "stopped after 50 errors", "located": True},
        {"id": "5000 syntax errors", "args": ["check", str(tmp / "syntax.arch")],
         "expect": "unexpected", "located": True},
        {"id": "a line of 600 KB", "args": ["check", str(tmp / "long_line.arch")],
         "expect": "unknown op", "located": True},
        {"id": "300 nested includes", "args": ["check", str(many / "f0.arch")],
         "expect": "files in one spec", "located": True},
        {"id": "--set bomb", "args": ["stats", str(tmp / "k.arch"), "--set", f"k={values}",
                                      "--set", f"s={values}"], "expect": "combinations"},
        {"id": "--set inf", "args": ["check", str(tmp / "k.arch"), "--set", "k=1e999"],
         "expect": "finite"},
        {"id": "--set forged spec text", "args": ["format", str(tmp / "k.arch"), "--set",
                                                  "s=x\narch evil\ninput 1x1x1"],
         "expect": "control character"},
        {"id": "--set markup", "args": ["stats", str(tmp / "k.arch"), "--set", "s=[/x]"],
         "expect": "ok"},
        {"id": "diff /dev/zero", "args": ["diff", str(tmp / "k.arch"), "/dev/zero"],
         "expect": "device"},
        {"id": "diff FIFO", "args": ["diff", str(fifo), str(tmp / "k.arch")], "expect": "FIFO"},
        {"id": "diff markup settings", "args": ["diff", str(tmp / "k.arch"), "--set-a",
                                                "s=[/x]", "--set-b", "s=[link=https://e]y"],
         "expect": "ok"},
        {"id": "diff markdown", "args": ["diff", str(tmp / "k.arch"), "--set-a", "s=a|b",
                                         "-f", "markdown"], "expect": "ok"},
        {"id": "diff huge setting", "args": ["diff", str(tmp / "k.arch"), "--set-b",
                                             "k=99999999999"], "expect": "limit",
         "located": True},
        {"id": "diff --set bomb", "args": ["diff", str(tmp / "k.arch"), "--set-a",
                                           f"k={values}", "--set-b", f"s={values}"],
         "expect": "takes one"},
        {"id": "graph onto its spec", "args": ["graph", str(tmp / "k.arch"), "-o",
                                               str(tmp / "k.arch")], "expect": "inputs"},
        {"id": "bad option", "args": ["stats", str(tmp / "k.arch"), "--depth", "0"],
         "expect": "Invalid value", "status": 2},
    ]


@pytest.fixture(scope="module")
def results(tmp_path_factory) -> dict[str, tuple[dict, dict]]:
    tmp = tmp_path_factory.mktemp("hostile")
    cases = _corpus_cases() + _made_cases(tmp)
    env = {**os.environ, "COLUMNS": "120", "NO_COLOR": "1", "TERM": "dumb"}
    done = subprocess.run([sys.executable, str(DRIVER)], input=json.dumps(cases),
                          capture_output=True, text=True, timeout=900, cwd=tmp, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    got = {r["id"]: r for r in json.loads(done.stdout)}
    return {c["id"]: (c, got[c["id"]]) for c in cases}


LOCATED = re.compile(r"^\S.*:\d+:\d+: error: ", re.M)


def test_every_hostile_input_ends_cleanly(results):
    failures = []
    for case_id, (case, r) in results.items():
        problems = _problems(case, r)
        if problems:
            failures.append(f"{case_id}: {'; '.join(problems)}\n{r['stderr'][-1500:]}")
    assert not failures, "\n\n".join(failures)


def _problems(case: dict, r: dict) -> list[str]:
    out = r["stdout"] + r["stderr"]
    expect = case["expect"]
    problems = []
    if r["status"] not in (0, 1, 2):
        problems.append(f"status {r['status']}")
    if "Traceback" in out or "internal error" in out:
        problems.append("a traceback")
    if "\x1b" in out or "\x00" in out:
        problems.append("control characters on the terminal")
    if r["seconds"] > SECONDS:
        problems.append(f"took {r['seconds']} s")
    if r["peak_kib"] and r["peak_kib"] > PEAK_KIB:
        problems.append(f"peak memory {r['peak_kib'] // 1024} MiB")
    want = case.get("status", 0 if expect == "ok" else 1)
    if r["status"] != want:
        problems.append(f"status {r['status']}, expected {want}")
    if want == 1 and len(r["stderr"]) > 64_000:  # 50 errors, each with a line cut short
        problems.append(f"{len(r['stderr']):,} characters of errors")
    if expect != "ok" and expect not in r["stderr"]:
        problems.append(f"no {expect!r} in the message")
    if want == 1 and case.get("located") and not LOCATED.search(r["stderr"]):
        problems.append("no located error")
    return problems


def test_the_corpus_is_quick(results):
    """The budgets are met quickly, not after minutes: all of it well within a CI run."""
    total = sum(r["seconds"] for _, r in results.values())
    slowest = max(results.values(), key=lambda cr: cr[1]["seconds"])
    assert total < 120, f"{total:.1f} s in all; slowest {slowest[0]['id']}"
