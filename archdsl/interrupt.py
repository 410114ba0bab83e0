"""Ctrl-C that always stops the command, cleanly.

Python turns SIGINT into a KeyboardInterrupt wherever the main thread happens to be. Inside
libraries that is not always an interruption: a bare `except:` swallows it (a Ctrl-C while TVM
imported was ignored: the compile ran on for minutes), and raised in a callback of MetaSchedule's
C++ loop it left objects half torn down (a crash, 3 times in 4). So the CLI installs `install`:
a Ctrl-C still raises KeyboardInterrupt at once, and is also remembered, so that `checkpoint`
(between the phases of a build) raises it again if something swallowed it; and inside `deferred`
(tuning) it is only remembered, for the work to stop at its next safe point.
"""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Callable, Iterator

_PRESSED: list[bool] = []
_DEFERRED: list[Callable[[], None] | None] = []  # the innermost `deferred`'s callback


def _on_sigint(signum, frame) -> None:
    first = not _PRESSED
    _PRESSED.append(True)
    if _DEFERRED and first:  # remembered; the work stops at its next safe point
        if _DEFERRED[-1] is not None:
            _DEFERRED[-1]()
        return
    raise KeyboardInterrupt


def install() -> None:
    """Take SIGINT (the main thread only: where Python runs signal handlers)."""
    _PRESSED.clear()
    signal.signal(signal.SIGINT, _on_sigint)


def pressed() -> bool:
    """Whether Ctrl-C was pressed since `install` (or inside `deferred`)."""
    return bool(_PRESSED)


def checkpoint() -> None:
    """Raise KeyboardInterrupt if Ctrl-C was pressed: for the places between phases where
    stopping is safe, in case the interrupt was swallowed on the way."""
    if _PRESSED:
        raise KeyboardInterrupt


@contextlib.contextmanager
def deferred(on_first: Callable[[], None] | None = None) -> Iterator[None]:
    """Inside, the first Ctrl-C only sets `pressed()` (and calls `on_first`); the work checks
    it at its safe points. A second Ctrl-C raises KeyboardInterrupt at once. Outside the main
    thread, signals are not ours to take: nothing changes."""
    try:
        saved = signal.signal(signal.SIGINT, _on_sigint)
    except ValueError:
        yield
        return
    ours = saved is _on_sigint  # installed by the CLI: what was pressed before still counts
    if not ours:
        _PRESSED.clear()
    _DEFERRED.append(on_first)
    try:
        yield
        checkpoint()  # pressed, and the work ended before a safe point noticed
    finally:
        _DEFERRED.pop()
        signal.signal(signal.SIGINT, saved)
        if not ours:
            _PRESSED.clear()


@contextlib.contextmanager
def blocked() -> Iterator[None]:
    """SIGINT held back from this thread while inside, and delivered on the way out. Threads
    and processes started inside inherit the block: worker processes started so never die of
    the terminal's Ctrl-C, which reaches the whole process group, before they can ignore it."""
    try:
        old = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    except (AttributeError, ValueError, OSError):  # not POSIX
        yield
        return
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)
