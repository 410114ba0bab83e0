"""TVM backend: a typed archdsl graph → Relax → native code (Apache TVM 0.27, Relax VM).

    >>> from archdsl.backends import tvm as tvm_backend
    >>> net = archdsl.load("specs/lenet5.arch")
    >>> compiled = tvm_backend.compile(net.graph, weights=net.to_torch().state_dict())
    >>> compiled(np.zeros((1, 1, 32, 32), "float32")).shape
    (1, 10)

The package follows the pipeline: `lower` (graph → Relax, the lowering table, weights),
`build` (fuse, schedule hooks, lower to the VM, codegen: `compile`, `make_target`),
`schedules/` (archdsl's default CPU schedules, one module per rule family), `tune` and
`measure` (MetaSchedule tuning as a resumable job), and `runtime` (`Compiled`: call, save,
load — TVM's runtime only, no compiler). Importing this package needs only TVM's runtime; the
compiler's names (`compile`, `build_module`, ...) load on first use, so that a deployment with a
runtime-only TVM can still `from archdsl.backends.tvm.runtime import Compiled`.
"""

from __future__ import annotations

import importlib
from typing import Any

try:
    import tvm  # noqa: F401
except ImportError as exc:  # pragma: no cover - exercised only without tvm
    raise ImportError("the TVM backend needs Apache TVM: pip install 'archdsl[tvm]'") from exc

from archdsl.backends.tvm.runtime import Compiled

# name → the submodule that defines it, imported on first use (it needs TVM's compiler)
_LAZY = {
    "SCHEDULE_HOOKS": "build", "ScheduleHook": "build", "compile": "build",
    "make_target": "build", "_fuse_passes": "build",
    "LOWERINGS": "lower", "UNSUPPORTED": "lower", "WeightsError": "lower",
    "build_module": "lower", "random_weights": "lower", "weight_shapes": "lower",
}

__all__ = ["LOWERINGS", "SCHEDULE_HOOKS", "UNSUPPORTED", "Compiled", "WeightsError",
           "build_module", "compile", "make_target", "random_weights", "weight_shapes"]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{module}"), name)
