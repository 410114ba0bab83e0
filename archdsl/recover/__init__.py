"""Structure recovery: a flat imported graph → the spec a person would write (no torch).

    decompose (structure.py)  the dataflow as sequences and joins, scopes laid over them
    build (doc.py)            statements: layers with their norm/act, residual/gate/dense,
                              labels only where elaboration would not give the name
    extract (blocks.py)       one block per module class and skeleton, with parameters;
                              repetition as `x N`; network defaults factored out
    render (render.py)        text; then parsed and compared with the network (verify.py)

Every spec this returns elaborates to the imported graph (verified); when a more compact form
cannot be verified, a plainer one is written instead (blocks inlined, then the canonical form).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from ..ops import OPS
from .blocks import Block, compact, extract, progressions
from .doc import build
from .flat import FlatNet, FlatNode, Unmapped
from .forms import Call, Defaults, Group, Layer, Stmt, attached_owner, bodies, nested
from .render import Binding, render
from .structure import (
    StructureError,
    decompose,
    group,
    lift_out_of_layers,
    name_function_modules,
    unshare,
)
from .verify import differences

__all__ = ["FlatNet", "FlatNode", "RecoverFailed", "Recovered", "StructureError", "Unmapped",
           "recover"]


class RecoverFailed(Exception):
    """A bug in recovery: the text written does not elaborate to the network."""


@dataclass
class Recovered:
    text: str
    blocks: int  # block definitions written
    level: str  # blocks | groups: how compact the verified text is


def recover(net: FlatNet, header: list[str] | None = None) -> Recovered:
    """Spec text for the network (raises StructureError where archdsl's nesting cannot
    write its wiring)."""
    lift_out_of_layers(net)
    unshare(net)
    name_function_modules(net)
    tree = group(net, decompose(net))
    last = None
    for use_blocks in (True, False):
        stmts = build(net, tree)
        text, n = _write(net, stmts, use_blocks, header or [])
        last = _check(text, net)
        if last is None:
            return Recovered(text, n, "blocks" if use_blocks else "groups")
    raise RecoverFailed(f"no spec archdsl could write reproduces the network: {last}")


def _write(net: FlatNet, stmts: list[Stmt], use_blocks: bool,
           header: list[str]) -> tuple[str, int]:
    defaults = choose_defaults(stmts)
    bind = Binding()
    blocks = extract(stmts, defaults, bind) if use_blocks else []
    classes = _bind_classes(net, stmts, defaults, bind)

    def text_of(stmt: Stmt) -> str:
        saved = stmt.label, stmt.repeat, stmt.template
        stmt.label, stmt.repeat, stmt.template = None, 1, None
        try:
            return "\n".join(render([stmt], defaults, bind))
        finally:
            stmt.label, stmt.repeat, stmt.template = saved

    for body in _bodies(stmts, blocks):
        body[:] = compact(progressions(body, defaults), text_of)
    blocks = _inline(stmts, blocks)
    lines = list(header)
    for block in blocks:
        lines.append(f"block {block.name}({_params(block)}) {{  # {block.cls}, "
                     f"{block.instances} uses")
        lines += render(block.body, defaults, bind, 1)
        lines += ["}", ""]
    params = f"(classes = {classes})" if classes is not None else ""
    lines.append(f"arch {_arch_name(net.name)}{params}")
    lines.append("input " + "x".join(str(d) for d in net.input_shape))
    if defaults.line():
        lines.append(defaults.line())
    lines += render(stmts, defaults, bind, 0)
    return "\n".join(lines) + "\n", len(blocks)


def _inline(stmts: list[Stmt], blocks: list[Block]) -> list[Block]:
    """A block without parameters called from one place reads better written there, as the
    scope it makes (ViT's MLPBlock inside its EncoderBlock)."""
    sites: Counter = Counter()
    for body in _bodies(stmts, blocks):
        sites.update(s.block for s in body if isinstance(s, Call))
    keep = []
    for block in blocks:
        if sites[block.name] != 1 or block.params:
            keep.append(block)
            continue
        for body in _bodies(stmts, keep + [b for b in blocks if b not in keep]):
            for k, s in enumerate(body):
                if isinstance(s, Call) and s.block == block.name and s.repeat == 1 and \
                        s.template is None and s.scope:
                    body[k] = Group(label=s.scope, body=block.body, cls=block.cls)
                    break
            else:
                continue
            break
        else:
            keep.append(block)
    return keep


def _params(block: Block) -> str:
    from ..formatter import spec_value
    from .forms import NOVALUE
    return ", ".join(p.name if p.default is NOVALUE else f"{p.name} = {spec_value(p.default)}"
                     for p in block.params)


def _arch_name(name: str) -> str:
    import re
    out = re.sub(r"[^A-Za-z0-9_]", "_", name) or "imported"
    return out if not out[0].isdigit() else f"net_{out}"


def _bodies(stmts: list[Stmt], blocks: list[Block]) -> list[list[Stmt]]:
    """Every statement list (block bodies, arch body, groups, branches), innermost first."""
    return [b for block in blocks for b in bodies(block.body)] + bodies(stmts)


def choose_defaults(stmts: list[Stmt]) -> Defaults:
    """The network's most common attached norm and activation, and bias where most layers
    differ from `auto` (a bias unless a norm follows)."""
    norms: Counter = Counter()
    acts: Counter = Counter()
    biases: Counter = Counter()
    for layer in _layers(stmts):
        op = OPS[layer.op]
        if not op.attaches:
            continue
        norm = next((k for k in layer.attach if OPS[k].category == "norm"), None)
        act = next((k for k in layer.attach if OPS[k].category == "act"), None)
        if "norm" in op.default_attach:
            norms[norm] += 1
        acts[act] += 1
        if "bias" in layer.attrs:
            biases[layer.attrs["bias"] if layer.attrs["bias"] != (norm is None) else "auto"] += 1
    norm = norms.most_common(1)[0][0] if norms else None
    act = acts.most_common(1)[0][0] if acts else None
    bias = biases.most_common(1)[0][0] if biases else "auto"
    return Defaults(norm, act, None if bias == "auto" else bias, _attr_defaults(stmts))


# attributes a `defaults` line may set for the whole network (MNASNet's BN momentum)
_SHARED = ("eps", "momentum")


def _attr_defaults(stmts: list[Stmt]) -> tuple:
    out = []
    for key in _SHARED:
        seen: Counter = Counter()
        for layer in _layers(stmts):
            for op, attrs in ((layer.op, layer.attrs), (None, layer.attach_attrs)):
                if key in attrs:
                    spec = OPS[op or attached_owner(layer, key)].attrs[key]
                    seen[attrs[key] if attrs[key] != spec.default else None] += 1
        if seen:
            value, count = seen.most_common(1)[0]
            if value is not None and count * 2 > sum(seen.values()):
                out.append((key, value))
    return tuple(out)


def _layers(stmts: list[Stmt]):
    """The layers outside block calls, in order."""
    for s in stmts:
        if isinstance(s, Layer):
            yield s
        for b in nested(s):
            yield from _layers(b)


def _bind_classes(net: FlatNet, stmts: list[Stmt], defaults: Defaults,
                  bind: Binding) -> int | None:
    """The classifier's width as the architecture's `classes` parameter (the zoo's
    convention; `to_torch(num_classes=...)` uses it): the last FC/linear layer outside any
    block, when its width is the network's output."""
    last = None
    for s in _layers(stmts):
        if s.op in ("fc", "linear"):
            last = s
    out = net.node(net.output).shape
    if last is None or len(out) != 1 or last.attrs["out"] != out[0]:
        return None
    from .forms import form
    slot = form(last, defaults).dash
    if slot is None:
        return None
    slot.expr = "classes"
    return out[0]


def _check(text: str, net: FlatNet) -> str | None:
    from ..api import elaborate, load_spec
    from ..errors import ArchErrors
    try:
        program = load_spec(text)
        graph = elaborate(program, next(iter(program.own)))
    except ArchErrors as exc:
        return exc.errors[0].render()
    return differences(graph, net)

