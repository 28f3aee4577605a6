"""Several lookups ("views") over one kind, kept by a single kopf index.

kopf calls each index handler of a kind on every event of that kind, each call with its own kwargs, context and
outcome: in a 200-run fan-out, py-spy put a third of the operator's event loop in the seven TrainingRun indexes.
One handler computes every view and stores each entry under its view's name, so an event costs one call.

The handler always returns a mapping, possibly empty. kopf keeps an object's earlier entries when an index
handler returns None (only a mapping replaces them), so a view that leaves an object out (a finished run
leaving runs_in_flight) returns None or {} here and its old entries go."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import kopf

from mloop.api.kinds import GROUP, VERSION

ViewFn = Callable[..., Mapping[Any, Any] | None]
log = logging.getLogger("mloop.views")


class View:
    """One view's entries, read from the handler kwargs that hold its kind's index: `get` and `in` by its keys."""

    def __init__(self, kwarg: str, name: str):
        self.kwarg, self.name = kwarg, name

    def of(self, kwargs: Mapping[str, Any]) -> _Entries:
        return _Entries(kwargs[self.kwarg], self.name)


class _Entries:
    __slots__ = ("_index", "_name")

    def __init__(self, index: Mapping[Any, Iterable[Any]], name: str):
        self._index, self._name = index, name

    def get(self, key: Any, default: Any = ()) -> Any:
        return self._index.get((self._name, key), default)

    def __contains__(self, key: Any) -> bool:
        return (self._name, key) in self._index


class Views:
    """The views of one kind. Its index reaches handlers as the kwarg `<kind>_views`; `view` registers a pure
    function of the object (kopf's kwargs) returning {key: value}, and gives the View that reads it."""

    def __init__(self, plural: str, kind: str, registry: kopf.OperatorRegistry | None = None):
        self.kwarg = f"{kind}_views"
        self._fns: dict[str, ViewFn] = {}
        kopf.index(GROUP, VERSION, plural, id=self.kwarg, registry=registry)(self.entries)

    async def entries(self, **kwargs: Any) -> dict[tuple[str, Any], Any]:
        """What kopf stores for one object: every view's entries, keyed (view, key). Async: no handler thread."""
        found: dict[tuple[str, Any], Any] = {}
        for name, fn in self._fns.items():
            try:
                found.update(((name, key), value) for key, value in (fn(**kwargs) or {}).items())
            except Exception:  # as kopf treats a failing index: this view drops the object, the others keep it
                log.exception("view %s of %s failed", name, self.kwarg)
        return found

    def view(self, fn: ViewFn) -> View:
        if fn.__name__ in self._fns:
            raise ValueError(f"{self.kwarg}: a view named {fn.__name__} is registered already")
        self._fns[fn.__name__] = fn
        return View(self.kwarg, fn.__name__)


TRAININGRUNS = Views("trainingruns", "trainingrun")
