"""Distributed training on torch.distributed: a process per device, started by `torchrun`
(which sets RANK, WORLD_SIZE, LOCAL_RANK and the rendezvous address) or by `launch`, which
runs torch's own elastic launcher — the engine behind torchrun — in this process. gloo on
CPUs, NCCL on GPUs; DistributedDataParallel averages the gradients."""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.distributed as dist

from archdsl.errors import UsageError


@dataclass
class Env:
    rank: int
    world: int
    local_rank: int
    device: torch.device

    @property
    def main(self) -> bool:
        return self.rank == 0


def setup(device: str = "auto") -> Env:
    """This process's place in the run; joins the process group when there are several."""
    if device not in ("auto", "cpu", "cuda"):
        raise UsageError(f"unknown device `{device}`", None, "auto, cpu or cuda")
    if device == "cuda" and not torch.cuda.is_available():
        raise UsageError("--device cuda: no CUDA device is available here", None)
    cuda = device == "cuda" or (device == "auto" and torch.cuda.is_available())
    world = int(os.environ.get("WORLD_SIZE", "1"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if cuda:
        torch.cuda.set_device(local_rank)
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if cuda else "gloo")
    rank = dist.get_rank() if world > 1 else 0
    return Env(rank, world, local_rank,
               torch.device("cuda", local_rank) if cuda else torch.device("cpu"))


def teardown() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def _active() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def _device() -> torch.device:
    return torch.device("cuda", torch.cuda.current_device()) \
        if dist.get_backend() == "nccl" else torch.device("cpu")


def any_rank(flag: bool) -> bool:
    """True on every process when it is true on any (a stop asked for on one rank)."""
    if not _active():
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device=_device())
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())


def barrier() -> None:
    if _active():
        dist.barrier()


def rng_states(env: Env) -> dict[str, torch.Tensor]:
    """Every process's generator states (CPU, and its GPU's), gathered on each."""
    own = [("cpu", torch.get_rng_state())]
    if env.device.type == "cuda":
        own.append(("cuda", torch.cuda.get_rng_state(env.device)))
    if not _active():
        return {f"{kind}.0": s for kind, s in own}
    out = {}
    for kind, state in own:
        t = state.to(_device())
        parts = [torch.empty_like(t) for _ in range(env.world)]
        dist.all_gather(parts, t)
        out.update({f"{kind}.{r}": p.cpu() for r, p in enumerate(parts)})
    return out


def set_rng_states(env: Env, states: dict[str, torch.Tensor]) -> bool:
    """Restore this rank's generators; False when the checkpoint has none for it (it was
    written by a run with fewer processes)."""
    cpu = states.get(f"cpu.{env.rank}")
    if cpu is None:
        return False
    torch.set_rng_state(cpu)
    cuda = states.get(f"cuda.{env.rank}")
    if cuda is not None and env.device.type == "cuda":
        torch.cuda.set_rng_state(cuda, env.device)
    return True


class StopFlag:
    """Set by Ctrl-C or SIGTERM (torchrun's way of stopping its workers) while installed:
    the run ends after the step in progress, with a checkpoint. A second Ctrl-C interrupts
    at once."""

    def __init__(self) -> None:
        self._set = False
        self._saved: dict[int, object] = {}

    def set(self) -> None:
        self._set = True

    def is_set(self) -> bool:
        return self._set

    def _handler(self, signum, frame) -> None:
        if self._set and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self._set = True

    def __enter__(self) -> StopFlag:
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._saved[sig] = signal.signal(sig, self._handler)
        return self

    def __exit__(self, *exc) -> None:
        for sig, handler in self._saved.items():
            signal.signal(sig, handler)
        self._saved.clear()


def launch(nproc: int, entrypoint: Callable, *args) -> None:
    """Run `entrypoint(*args)` in `nproc` processes on this machine with torch's elastic
    launcher, as `torchrun --standalone --nproc_per_node N` would."""
    import logging
    import uuid

    from torch.distributed.launcher.api import LaunchConfig, elastic_launch
    # a failed worker has told its error already; the agent's log would add its traceback,
    # and a line for each worker it then stops
    for name in ("torch.distributed.elastic", "torch.multiprocessing"):
        logging.getLogger(name).setLevel(logging.CRITICAL)
    config = LaunchConfig(min_nodes=1, max_nodes=1, nproc_per_node=nproc,
                          run_id=str(uuid.uuid4()), rdzv_backend="c10d",
                          rdzv_endpoint="localhost:0", max_restarts=0, monitor_interval=0.2,
                          start_method="spawn")
    elastic_launch(config, entrypoint)(*args)
