"""archdsl: a declarative language for neural-network architectures, and its compiler.

    >>> import archdsl
    >>> net = archdsl.load("specs/resnet50.arch")
    >>> net.stats().totals["params"]
    25557032

The core (parse, check, stats) needs neither torch nor tvm; backends load lazily.
"""

from .analysis import Row, Stats, analyse
from .api import Architecture, elaborate, from_torch, import_model, load, load_all, load_spec
from .errors import ArchError, ArchErrors, Span
from .expr import make_divisible
from .formatter import format_graph
from .ir import Graph, Node, validate
from .ops import OPS, AttrSpec, OpDef, OpShapeError
from .plugins import PluginError, load_plugin, register_op, unregister_op

__version__ = "0.1.0"

__all__ = [
    "OPS", "ArchError", "ArchErrors", "Architecture", "AttrSpec", "Graph", "Node", "OpDef",
    "OpShapeError", "PluginError", "Row", "Span", "Stats", "analyse", "elaborate",
    "format_graph", "from_torch", "import_model", "load", "load_all", "load_plugin",
    "load_spec", "make_divisible",
    "register_op", "unregister_op", "validate", "__version__",
]
