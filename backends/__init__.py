"""Backends: a typed archdsl graph → something that runs (installed as archdsl.backends).

Each backend is one module or package, imported lazily so that the core needs neither torch nor tvm.
"""

from __future__ import annotations

import importlib
from types import ModuleType

EXTRAS = {"pytorch": "torch", "pytorch.importer": "torch", "pytorch.train": "train",
          "tvm": "tvm", "tvm.build": "tvm",
          "tvm.runtime": "tvm"}


class BackendUnavailable(ImportError):
    """A backend whose framework is not installed."""


def load_backend(name: str) -> ModuleType:
    try:
        return importlib.import_module(f"archdsl.backends.{name}")
    except ImportError as exc:
        if "pip install" in str(exc):  # the backend said what to install: say it once
            raise BackendUnavailable(str(exc)) from exc
        extra = EXTRAS.get(name, name)
        raise BackendUnavailable(
            f"the {name} backend needs a package that is not installed ({exc.name or exc}): "
            f"pip install 'archdsl[{extra}]'") from exc
