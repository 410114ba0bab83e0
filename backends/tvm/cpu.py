"""The CPU features a build's code may use, and whether this CPU has them.

A library built for another x86-64 (`--target llvm -mcpu=znver4`) holds instructions this CPU
may lack; run, it would die of SIGILL at its first kernel. A build records what it needs: its
CPU name and its instruction-set features as LLVM names them (`needs`, from the compiler), in
its embedded metadata and its manifest; before running anything, `Compiled` compares them
with the host's (`missing`, from /proc/cpuinfo: no compiler needed) and refuses, naming them.

Only instruction-set extensions are recorded (LLVM's list also holds tuning hints such as
`fast-lzcnt`, which no CPU can lack), and only those that /proc/cpuinfo spells knowingly:
the table below maps LLVM's name to the kernel's flag.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

__all__ = ["ISA_FLAGS", "CpuFeaturesError", "host_flags", "missing", "needs"]

# LLVM's feature name → the flag in /proc/cpuinfo (Linux, arch/x86/include/asm/cpufeatures.h)
ISA_FLAGS = {
    "sse": "sse", "sse2": "sse2", "sse3": "pni", "ssse3": "ssse3", "sse4.1": "sse4_1",
    "sse4.2": "sse4_2", "sse4a": "sse4a", "popcnt": "popcnt", "lzcnt": "abm", "bmi": "bmi1",
    "bmi2": "bmi2", "movbe": "movbe", "f16c": "f16c", "fma": "fma", "avx": "avx",
    "avx2": "avx2", "avxvnni": "avx_vnni", "avx512f": "avx512f", "avx512cd": "avx512cd",
    "avx512bw": "avx512bw", "avx512dq": "avx512dq", "avx512vl": "avx512vl",
    "avx512ifma": "avx512ifma", "avx512vbmi": "avx512vbmi", "avx512vbmi2": "avx512_vbmi2",
    "avx512vnni": "avx512_vnni", "avx512bitalg": "avx512_bitalg",
    "avx512vpopcntdq": "avx512_vpopcntdq", "avx512bf16": "avx512_bf16",
    "avx512fp16": "avx512_fp16", "avx512vp2intersect": "avx512_vp2intersect",
    "amx-tile": "amx_tile", "amx-int8": "amx_int8", "amx-bf16": "amx_bf16",
}


class CpuFeaturesError(RuntimeError):
    """A library built for a CPU with features this one lacks."""


def needs(target) -> dict[str, Any] | None:
    """{"mcpu": name, "features": [...]}: what code built for `target` (an llvm target, or
    the llvm host of a GPU target) may use; None for a target with no x86 code. Needs TVM's
    compiler (LLVM)."""
    from tvm.target.codegen import llvm_get_cpu_features
    cpu = target if target.kind.name == "llvm" else target.host
    if cpu is None or cpu.kind.name != "llvm":
        return None
    features = set(llvm_get_cpu_features(cpu))
    return {"mcpu": str(cpu.attrs.get("mcpu", "generic")),
            "features": sorted(f for f in features if f in ISA_FLAGS)}


def host_flags(cpuinfo: str | Path = "/proc/cpuinfo") -> set[str] | None:
    """This CPU's feature flags (the first processor's), or None where they cannot be read
    (not Linux)."""
    try:
        text = Path(cpuinfo).read_text(errors="replace")
    except OSError:
        return None
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "flags":
            return set(value.split())
    return None


def missing(need: dict[str, Any] | None, flags: set[str] | None = None) -> list[str]:
    """The features `need` lists (as `needs` writes them) that this CPU (or `flags`) lacks;
    empty when it has them all, when nothing is recorded, or when the host's flags cannot be
    read (nothing to compare with)."""
    if not isinstance(need, dict) or not isinstance(need.get("features"), list):
        return []
    flags = host_flags() if flags is None else flags
    if flags is None:
        return []
    return [f for f in need["features"] if f in ISA_FLAGS and ISA_FLAGS[f] not in flags]
