"""A minimal callback hub for the GUI's state objects (glue's callback properties, napari's events).

Pure Python, no Qt: views connect to an :class:`Event`; the state emits it after it has changed. Callbacks run
synchronously in the order they were connected, so a test can change the state and check a view at once.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from typing import Any


class Event:
    """``connect(cb)``, ``disconnect(cb)``, ``emit(*args)``. Bound methods are held weakly."""

    def __init__(self, name: str = ""):
        self.name = name
        self._callbacks: list[Any] = []
        self._blocked = 0

    def connect(self, callback: Callable) -> Callable:
        try:
            ref = weakref.WeakMethod(callback)  # a bound Python method: do not keep its object alive
        except TypeError:
            ref = callback
        self._callbacks.append(ref)
        return callback

    def disconnect(self, callback: Callable) -> None:
        keep = []
        for ref in self._callbacks:
            cb = ref() if isinstance(ref, weakref.WeakMethod) else ref
            if cb is not None and cb != callback:
                keep.append(ref)
        self._callbacks = keep

    def emit(self, *args, **kwargs) -> None:
        if self._blocked:
            return
        dead = False
        for ref in list(self._callbacks):
            cb = ref() if isinstance(ref, weakref.WeakMethod) else ref
            if cb is None:
                dead = True
                continue
            cb(*args, **kwargs)
        if dead:
            self._callbacks = [r for r in self._callbacks
                               if not (isinstance(r, weakref.WeakMethod) and r() is None)]

    def __len__(self) -> int:
        return len(self._callbacks)

    class _Blocker:
        def __init__(self, ev: Event):
            self.ev = ev

        def __enter__(self):
            self.ev._blocked += 1

        def __exit__(self, *exc):
            self.ev._blocked -= 1

    def blocked(self) -> _Blocker:
        """Context manager: no emission inside."""
        return Event._Blocker(self)
