"""Set-up of the long-running processes: each ``ordo serve`` worker and each ``ordo worker``.

**The heap.**
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

**The CPU priority of job workers.** :func:`lower_priority` raises an ``ordo worker``'s
niceness by ``ORDO_WORKER_NICE`` (default 0: unchanged) before it starts its own threads; on
Linux niceness is per thread, so the threads already running (OpenBLAS's) are lowered with it,
and the listener, the job loop and the solver's threads inherit it. Where workers share cores
with the API processes, the requests then run first and the re-plans take what is left: under
the load benchmark's fleets (2 cores shared by 2 API processes, 1 worker and PostgreSQL) a
niceness of 10 cut the trainers' report latency by a third to a half and lengthened the
re-plan lag's tail (docs/jobs.md, "Who runs jobs"). A trainer waits for both, so neither is
the default. The embedded runner's job thread (``ordo serve`` on SQLite) is never lowered: it
shares the GIL with the requests, and a thread the kernel holds back while it holds the GIL
would hold them back too.
"""

from __future__ import annotations

import contextlib
import gc
import os
from pathlib import Path

YOUNG_THRESHOLD = 10_000
"""Net new tracked objects between collections of the young generation (CPython's default 700)."""
TASKS = Path("/proc/self/task")
"""This process's threads (Linux)."""


def settle_heap() -> None:
    """Collect, freeze what survives, and collect the young generation every
    ``YOUNG_THRESHOLD`` net allocations (the older generations' thresholds unchanged)."""
    gc.collect()
    gc.freeze()
    _, middle, old = gc.get_threshold()
    gc.set_threshold(YOUNG_THRESHOLD, middle, old)


def lower_priority(increment: int) -> int:
    """Add ``increment`` to this process's niceness (lower CPU priority; 0: leave it); the
    niceness now. On Linux niceness is per thread: the threads running already (OpenBLAS's,
    started when numpy is imported) are lowered to it too, and threads started later inherit it.
    Where the platform has no niceness, nothing changes."""
    if not hasattr(os, "nice"):
        return 0
    niceness = os.nice(increment)
    if increment > 0 and TASKS.is_dir():
        for task in TASKS.iterdir():
            with contextlib.suppress(OSError, ValueError):  # a thread that ended meanwhile
                thread = int(task.name)
                if os.getpriority(os.PRIO_PROCESS, thread) < niceness:
                    os.setpriority(os.PRIO_PROCESS, thread, niceness)
    return niceness
