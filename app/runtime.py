"""Set-up of the long-running processes: each ``ordo serve`` worker and each ``ordo worker``.

CPython's cyclic garbage collector holds the GIL while it runs, so every thread of the process
(the event loop, the report batches, a plan job) stops meanwhile, and a full collection walks
every tracked object: in a server process, mostly what never dies (modules, the app's routes and
models, SQLAlchemy's metadata, the solver's libraries; ~218,000 objects once the app is built).
One full collection of that heap took 110 ms on the 2-core benchmark machine, and under a fleet
of trainers the collector held 40 % of an API process's GIL samples (``py-spy --gil --native``:
``gc_collect_main``, entered from whatever allocated next: the ASGI cycle, a cursor's fetch).

:func:`settle_heap`, called once the process has built what it keeps, collects once, moves what
survives out of the collector's reach for good (``gc.freeze``: a full collection of it then takes
no time), and lets the young generation grow to ``YOUNG_THRESHOLD`` tracked objects between
collections (what dies by reference counting first, most of a request's objects, is never
visited). Cycles made later (requests, jobs) are still collected. The collector's share fell to
5 % with the default young threshold (700) and to none seen at 10,000.
"""

from __future__ import annotations

import gc

YOUNG_THRESHOLD = 10_000
"""Net new tracked objects between collections of the young generation (CPython's default 700)."""


def settle_heap() -> None:
    """Collect, freeze what survives, and collect the young generation every
    ``YOUNG_THRESHOLD`` net allocations (the older generations' thresholds unchanged)."""
    gc.collect()
    gc.freeze()
    _, middle, old = gc.get_threshold()
    gc.set_threshold(YOUNG_THRESHOLD, middle, old)
