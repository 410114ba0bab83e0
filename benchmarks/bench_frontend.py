"""Front-end speed: parse + elaborate (shape inference) + stats, in one process; then the
whole command a user runs, `archdsl stats SPEC --format json`, start-up included.

Targets (issues 2 and 14): ResNet-152 well under 100 ms; a synthetic 10,000-layer spec under
2 s in process, and `archdsl stats --format json` on it within 1 s; cost linear in size.
Prints tables; the "per layer" column shows linearity, and the last column compares each size
with the smallest one as a ratio (1.00 = perfectly linear; for the command, after taking away
the start-up time of the 10-layer spec).

    python benchmarks/bench_frontend.py
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from archdsl.analysis import analyse
from archdsl.api import elaborate
from archdsl.parser import _lark
from archdsl.program import load_program

ROOT = Path(__file__).resolve().parents[1]


def synthetic(layers: int) -> str:
    """A plain chain of `layers` conv layers (with BN and ReLU) plus residual blocks."""
    blocks = max(1, layers // 4)
    lines = ["block res(c) {", "  residual { conv3-{c}; conv3-{c} act=none }", "  relu", "}",
             "arch chain", "input 16x32x32", "defaults norm=bn act=relu"]
    lines += ["res(16)"] * blocks
    return "\n".join(lines) + "\n"


def run_once(text: str | None = None, path: Path | None = None, arch: str | None = None):
    t0 = time.perf_counter()
    program = load_program(path=path) if path else load_program(text=text)
    t1 = time.perf_counter()
    graph = elaborate(program, arch or program.own[0], {})
    t2 = time.perf_counter()
    stats = analyse(graph)
    _ = stats.totals
    t3 = time.perf_counter()
    return (t1 - t0, t2 - t1, t3 - t2, t3 - t0), graph.node_count - 1, stats


def best(fn, repeat: int):
    runs = [fn() for _ in range(repeat)]
    return min(runs, key=lambda r: r[0][3])


def main() -> int:
    t = time.perf_counter()
    _lark()  # the grammar tables are read once per process (shipped: grammar_tables.json)
    startup = time.perf_counter() - t
    print(f"grammar load (once per process): {startup * 1e3:.1f} ms\n")
    header = f"{'spec':<26}{'nodes':>8}{'parse ms':>10}{'elab ms':>10}{'stats ms':>10}" \
             f"{'total ms':>10}{'us/node':>9}{'vs 1k':>7}"
    print(header)
    print("-" * len(header))
    ok = True
    resnet = ROOT / "specs" / "resnet152.arch"
    if resnet.exists():
        (p, e, s, tot), nodes, _ = best(lambda: run_once(path=resnet), 20)
        print(f"{'resnet152':<26}{nodes:>8}{p*1e3:>10.1f}{e*1e3:>10.1f}{s*1e3:>10.1f}"
              f"{tot*1e3:>10.1f}{tot/nodes*1e6:>9.1f}{'':>7}")
        ok &= tot < 0.1
    base = None
    for layers in (1_000, 2_000, 5_000, 10_000):
        text = synthetic(layers)
        (p, e, s, tot), nodes, _ = best(lambda text=text: run_once(text=text), 3)
        per = tot / nodes
        base = base or per
        print(f"{f'synthetic {layers:,} layers':<26}{nodes:>8}{p*1e3:>10.1f}{e*1e3:>10.1f}"
              f"{s*1e3:>10.1f}{tot*1e3:>10.1f}{per*1e6:>9.1f}{per/base:>7.2f}")
        if layers == 10_000:
            ok &= tot < 2.0
    ok &= command_table()
    print("\ntargets: resnet152 < 100 ms, 10,000 layers < 2 s (in process) and 1 s (the "
          "command), per-node cost flat:", "met" if ok else "NOT met")
    return 0 if ok else 1


def command_table(repeat: int = 5) -> bool:
    """Wall time of `archdsl stats SPEC --format json > /dev/null`, best of `repeat`."""
    import subprocess
    import tempfile
    print(f"\n{'archdsl stats --format json':<34}{'wall ms':>10}{'us/layer*':>11}{'vs 1k':>7}")
    print("-" * 62)
    times = {}
    with tempfile.TemporaryDirectory() as tmp:
        for layers in (10, 1_000, 10_000):
            spec = Path(tmp) / f"s{layers}.arch"
            spec.write_text(synthetic(layers))
            runs = []
            for _ in range(repeat):
                t = time.perf_counter()
                subprocess.run([sys.executable, "-m", "archdsl", "stats", str(spec),
                                "--format", "json"], check=True, stdout=subprocess.DEVNULL)
                runs.append(time.perf_counter() - t)
            times[layers] = min(runs)
    base = (times[1_000] - times[10]) / 1_000
    for layers in (10, 1_000, 10_000):
        per = (times[layers] - times[10]) / layers if layers > 10 else 0.0
        print(f"{f'synthetic {layers:,} layers':<34}{times[layers] * 1e3:>10.0f}"
              f"{per * 1e6:>11.1f}{per / base if per else 0:>7.2f}")
    print("* after the 10-layer run's time (Python, imports, typer), per layer")
    return times[10_000] <= 1.0


if __name__ == "__main__":
    sys.exit(main())
