"""What each Ctrl-C means to a trace (supervisor.Interrupts), press by press.

The CLI test of a worker that ignores SIGINT (tests/cli/test_faults.py) lost its
run about one time in fifteen: its second Ctrl-C landed between the first
one's KeyboardInterrupt and the wait for the stopping worker, and escaped as a
second KeyboardInterrupt. These tests call the handler as the signal would.
"""

from __future__ import annotations

import pytest

from leakscope.drive.supervisor import Interrupts
from leakscope.model.errors import Abandoned


def press(interrupts: Interrupts) -> None:
    interrupts._handle(2, None)


def test_the_first_press_while_loops_run_stops_the_trace() -> None:
    said: list[str] = []
    interrupts = Interrupts(said.append)
    with pytest.raises(KeyboardInterrupt):
        press(interrupts)
    assert interrupts.stopping and not interrupts.forced
    assert "Ctrl-C again if it does not stop" in said[0]


def test_a_second_press_while_stopping_never_raises_it_only_forces() -> None:
    interrupts = Interrupts(lambda line: None)
    with pytest.raises(KeyboardInterrupt):
        press(interrupts)
    press(interrupts)  # wherever it lands, it must not cut the saving
    press(interrupts)
    assert interrupts.forced and interrupts.presses == 3


def test_after_an_interrupt_finishing_says_once_then_abandons() -> None:
    said: list[str] = []
    interrupts = Interrupts(said.append)
    with pytest.raises(KeyboardInterrupt):
        press(interrupts)
    press(interrupts)
    interrupts.finishing()
    press(interrupts)  # the verdict is being made: the first press there says so
    assert "finishing the verdict" in said[-1]
    with pytest.raises(Abandoned):
        press(interrupts)


def test_once_every_loop_arrived_the_first_press_cuts_nothing() -> None:
    said: list[str] = []
    interrupts = Interrupts(said.append)
    interrupts.finishing()
    press(interrupts)
    assert len(said) == 1 and "every loop was gathered" in said[0]
    with pytest.raises(Abandoned):
        press(interrupts)


def test_a_press_that_crossed_the_last_loop_counts_as_the_finishing_one() -> None:
    interrupts = Interrupts(lambda line: None)
    with pytest.raises(KeyboardInterrupt):
        press(interrupts)
    interrupts.crossed()
    with pytest.raises(Abandoned):
        press(interrupts)
