"""The measured process's own per-loop work keeps no block, whatever the interpreter's
free lists hold.

In fast mode the allocated-block count is the leak signal. CPython keeps freed
lists, dicts, floats and small tuples on free lists, and the block count includes
them: a loop that takes an object from one list and gives it back to another (a
``list()`` call allocates fresh but frees onto the list free list) moves no block
while the first still has some, and adds one a loop once it is empty, until the
second is full (80 lists: a 50-loop check read "1 block kept per iteration" on a
fixed extension). How full those lists are at start depends on what was imported
and how (a module loaded from its ``.pyc`` leaves them differently from one compiled
from source), which made the bug appear only in a clone whose tests had run. These
tests empty the free lists first, the state where such a ratchet shows at once.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

DRAIN = """
import sys

def drain_free_lists():
    '''Objects taken from every free list CPython keeps, held so they stay taken.'''
    held = []
    held.append([[] for _ in range(200)])              # lists (80 kept)
    held.append([{} for _ in range(200)])              # dicts and their keys (80)
    held.append([i * 0.5 for i in range(300)])         # floats (100)
    for size in range(1, 21):                          # tuples of 1..20 (2,000 each)
        held.append([(i,) * size for i in range(2100)])
    held.append([iter(()) for _ in range(10)])
    return held
"""


def run(body: str) -> int:
    code = DRAIN + textwrap.dedent(body)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, cwd=ROOT).stdout
    return int(out.split()[-1])


def test_draining_shows_a_free_list_ratchet() -> None:
    """The probe itself: with the free lists empty, a ``list()`` call a loop shows."""
    grown = run("""
        data = (1, 2, 3)
        for _ in range(100):
            list(data)
        held = drain_free_lists()
        before = sys.getallocatedblocks()
        for _ in range(50):
            list(data)
        print(sys.getallocatedblocks() - before)
    """)
    assert grown >= 40


def test_fast_mode_detect_loops_keep_no_block_with_empty_free_lists() -> None:
    """The detect phase's whole per-loop path: counters, the loop record, its message
    encoded and written to the parent's channel."""
    grown = run("""
        import os
        from leakscope.measure.collector import Collector
        from leakscope.measure.harness import Channel
        from leakscope.model import wire
        from leakscope.model.settings import Settings

        fd = os.open(os.devnull, os.O_WRONLY)
        collector = Collector(Settings(mode="fast", iterations=5000, warmup=0, holders=False),
                              wire.MessageObserver(Channel(fd).send))
        collector.begin()
        for _ in range(1000):  # one-off caches fill here
            collector.end_loop()
        held = drain_free_lists()
        # The first loops refill the free lists with their own working set (8 to 32
        # blocks, once); a ratchet goes on for as many loops as the list it feeds
        # holds (80 lists or dicts, 100 floats, 2,000 tuples a size).
        for _ in range(50):
            collector.end_loop()
        before = sys.getallocatedblocks()
        for _ in range(400):
            collector.end_loop()
        print(sys.getallocatedblocks() - before)
    """)
    assert grown < 10

