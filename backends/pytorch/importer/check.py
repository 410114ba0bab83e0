"""The round trip, counted: an imported spec's parameters and MACs against the module's own
(`numel` of the parameters the forward pass uses; PyTorch's FlopCounterMode on the meta device,
FLOPs / 2)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from archdsl.recover.result import Imported

from .trace import on_meta


@dataclass
class CountCheck:
    params: int  # the spec's (archdsl stats)
    module_params: int  # the module's, those its forward pass uses
    macs: int
    torch_macs: int | None  # FlopCounterMode's FLOPs / 2; None when it was not run
    partial: bool = False

    @property
    def ok(self) -> bool:
        return self.partial or (self.params == self.module_params and
                                self.torch_macs in (None, self.macs))

    def describe(self) -> str:
        if self.partial:
            return (f"partial spec: {self.params:,} params, {self.macs:,} MACs "
                    "(of the part written; not compared)")
        p = "=" if self.params == self.module_params else "≠"
        text = f"params {self.params:,} {p} the module's {self.module_params:,}"
        if self.torch_macs is not None:
            m = "=" if self.macs == self.torch_macs else "≠"
            text += f"; MACs {self.macs:,} {m} FlopCounterMode's {self.torch_macs:,} (FLOPs/2)"
        return ("checked: " if self.ok else "MISMATCH: ") + text


def torch_macs(module: torch.nn.Module, input_shape: tuple[int, ...]) -> int:
    """FlopCounterMode's count for one image, halved (it counts a multiply-add as 2 FLOPs),
    run on the meta device: no memory, no arithmetic."""
    from torch.utils.flop_counter import FlopCounterMode
    meta = on_meta(module)
    training = meta.training
    meta.eval()
    try:
        with FlopCounterMode(display=False) as counter, torch.no_grad():
            meta(torch.empty(1, *input_shape, device="meta"))
    finally:
        meta.train(training)
    return counter.get_total_flops() // 2


def check_counts(imported: Imported, flops: bool = True) -> CountCheck:
    totals = imported.load().stats().totals
    partial = not imported.complete
    macs = None
    if flops and not partial and imported.module is not None:
        macs = torch_macs(imported.module, imported.input_shape)
    return CountCheck(totals["params"], imported.module_params, totals["macs"], macs, partial)
