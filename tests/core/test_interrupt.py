"""Ctrl-C (archdsl/interrupt.py): remembered when swallowed, deferred to safe points while
tuning, held back while worker processes start."""

from __future__ import annotations

import os
import signal
import threading

import pytest

from archdsl import interrupt


@pytest.fixture(autouse=True)
def restore_sigint():
    saved = signal.getsignal(signal.SIGINT)
    yield
    signal.signal(signal.SIGINT, saved)
    interrupt._PRESSED.clear()


def ctrl_c() -> None:
    os.kill(os.getpid(), signal.SIGINT)


def test_a_swallowed_ctrl_c_is_raised_again_at_the_next_checkpoint():
    interrupt.install()
    interrupt.checkpoint()  # nothing pressed: nothing raised
    try:
        ctrl_c()
    except BaseException:  # noqa: S110 - a library's bare except, as TVM's import had
        pass
    assert interrupt.pressed()
    with pytest.raises(KeyboardInterrupt):
        interrupt.checkpoint()


def test_deferred_remembers_the_first_and_raises_the_second():
    notes = []
    with pytest.raises(KeyboardInterrupt):
        with interrupt.deferred(lambda: notes.append("stopping")):
            ctrl_c()  # remembered only: the work goes on to its next safe point
            assert interrupt.pressed() and notes == ["stopping"]
            ctrl_c()  # at once
            pytest.fail("the second Ctrl-C did not raise")
    assert not interrupt.pressed()  # outside the CLI, nothing outlives the block


def test_deferred_work_that_ends_before_a_safe_point_is_still_interrupted():
    with pytest.raises(KeyboardInterrupt):
        with interrupt.deferred():
            ctrl_c()


def test_blocked_holds_the_signal_back_until_the_end():
    """(Sent to this thread: a signal sent to the process may go to any thread that does not
    block it. What matters is what threads and processes started inside inherit.)"""
    got = []
    signal.signal(signal.SIGINT, lambda s, f: got.append(s))
    with interrupt.blocked():
        signal.pthread_kill(threading.get_ident(), signal.SIGINT)
        assert got == []
        assert signal.SIGINT in signal.pthread_sigmask(signal.SIG_BLOCK, set())
    assert got == [signal.SIGINT]
