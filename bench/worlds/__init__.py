"""The world suite: a registry of world families, each a factory ``(n, seed) -> World``.

Families are imported on demand (:func:`draw_world`), so a family whose module is missing or
broken does not break the others. Every factory is deterministic for its arguments and valid at
least for ``4 <= n <= 8`` (the synthetic families up to ``n = 14``). The interface is in
:mod:`bench.worlds.base`; the exhaustive oracle in :mod:`bench.worlds.oracle`.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import cast

from bench.worlds.base import World

__all__ = ["FAMILIES", "draw_world", "family_names"]

FAMILIES: dict[str, str] = {
    "skills": "bench.worlds.skills:skills_world",
    "additive": "bench.worlds.additive:additive_world",
    "recency": "bench.worlds.recency:recency_world",
    "mlp-split": "bench.worlds.digits:split_world",
    "mlp-permuted": "bench.worlds.digits:permuted_world",
    "mlp-rotated": "bench.worlds.digits:rotated_world",
    "policy": "bench.worlds.policy:policy_world",
}
"""Family name -> ``"module:function"`` of its factory."""


def family_names() -> tuple[str, ...]:
    """Every registered family, in registry order."""
    return tuple(FAMILIES)


def factory(family: str) -> Callable[[int, int], World]:
    """The factory ``(n, seed) -> World`` of ``family``, imported now."""
    if family not in FAMILIES:
        known = ", ".join(FAMILIES)
        raise ValueError(f"unknown world family {family!r} (known: {known})")
    module_name, _, function_name = FAMILIES[family].partition(":")
    module = importlib.import_module(module_name)
    return cast(Callable[[int, int], World], getattr(module, function_name))


def draw_world(family: str, n: int, seed: int) -> World:
    """The world of ``family`` with ``n`` tasks drawn from ``seed``."""
    return factory(family)(n, seed)
