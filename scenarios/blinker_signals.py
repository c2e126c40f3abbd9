"""Listeners connected per request through a real library: blinker, with ``weak=False``.

Each request connects an audit receiver to a module-level signal and never
disconnects it. With ``weak=False`` the signal owns every receiver.

Expected: leak=yes kind=reachable line=scenarios/blinker_signals.py:24
Holder: blinker_signals.order_placed.receivers role=callback-list
"""

from __future__ import annotations

import itertools

from blinker import Signal

order_placed = Signal("order-placed")
_ids = itertools.count()


def handle_order(order_id: int) -> None:
    def audit(sender, **kwargs):
        return (order_id, kwargs)

    order_placed.connect(audit, weak=False)
    order_placed.send("shop", order_id=order_id)


def iteration() -> None:
    handle_order(next(_ids))
