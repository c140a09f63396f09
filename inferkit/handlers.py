"""Custom REST handlers: model methods served on paths of their own (``@custom_handler``).

``@custom_handler("/my-endpoint")`` only marks a method with its path and HTTP method: it is
data, read when the model loads. The :class:`Server` keeps a table of the handlers of the loaded
models (:class:`HandlerTable`): a model's handlers enter it when the model loads, and leave it
when the model unloads. A path already taken by another model, or refused by a transport's check
(the REST app refuses its own V2 routes), is a load error naming both owners.

The core opens no socket and knows no web framework: the REST transport looks a request up in
the table and calls the method with what its signature asks for. gRPC serves no custom handlers.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any, TypeVar

import msgspec

from .errors import ModelLoadError

__all__ = ["CustomHandler", "HandlerRoute", "HandlerTable", "custom_handler", "find_handlers"]

#: The attribute ``@custom_handler`` sets on a method; MLServer's name, so either marker works.
HANDLER_ATTR = "__custom_handler__"

F = TypeVar("F", bound=Callable[..., Any])

#: A check a transport adds to the table: the reason it refuses a route, or "" to accept it.
RouteCheck = Callable[["HandlerRoute"], str]


class CustomHandler(msgspec.Struct, frozen=True):
    """Where a custom handler is served: a REST path and an HTTP method (``GET``, ``POST``)."""

    rest_path: str
    rest_method: str = "POST"


class HandlerRoute(msgspec.Struct, frozen=True):
    """A loaded model's custom handler: its owner, path, method and the bound method to call."""

    model: str
    version: str
    path: str
    method: str
    func: Callable[..., Any]

    @property
    def owner(self) -> str:
        """The owning model, as load errors name it."""
        return f"model '{self.model}'" + (f" version '{self.version}'" if self.version else "")


def custom_handler(rest_path: str, rest_method: str = "POST") -> Callable[[F], F]:
    """Serve the decorated model method on ``rest_path`` (REST only) while the model is loaded.

    The method gets what its signature asks for: the request for a parameter annotated
    ``Request``, the JSON body for one other parameter, nothing for none. Its return value is
    sent as JSON.
    """
    method = rest_method.upper()
    if method not in ("GET", "POST"):
        raise ValueError(f"custom_handler: rest_method must be GET or POST, got {rest_method!r}")
    if not rest_path.startswith("/"):
        raise ValueError(f"custom_handler: rest_path must start with '/', got {rest_path!r}")

    def mark(func: F) -> F:
        setattr(func, HANDLER_ATTR, CustomHandler(rest_path=rest_path, rest_method=method))
        return func

    return mark


def find_handlers(obj: object) -> list[tuple[CustomHandler, Callable[..., Any]]]:
    """The marked methods of a model instance (bound) or class (plain), sorted by name.

    A marker from MLServer's own decorator (a pydantic model with the same two fields) counts
    too, so a model class written against the real ``mlserver`` package is served the same.
    """
    cls = obj if isinstance(obj, type) else type(obj)
    # The class attributes themselves (never ``getattr`` on the instance: properties would run).
    members: dict[str, Any] = {}
    for klass in reversed(cls.__mro__):
        members.update(vars(klass))
    found = []
    for name in sorted(members):
        raw = members[name]
        marker = getattr(inspect.unwrap(raw), HANDLER_ATTR, None) if callable(raw) else None
        path, method = getattr(marker, "rest_path", None), getattr(marker, "rest_method", "POST")
        if isinstance(path, str) and isinstance(method, str):
            handler = CustomHandler(rest_path=path, rest_method=method.upper())
            found.append((handler, getattr(obj, name)))
    return found


class HandlerTable:
    """The custom handlers of the loaded models, keyed by ``(method, path)``."""

    def __init__(self) -> None:
        self._routes: dict[tuple[str, str], HandlerRoute] = {}
        #: Checks added by transports (the REST app refuses paths of its own V2 routes).
        self.checks: list[RouteCheck] = []

    def routes(self) -> list[HandlerRoute]:
        """Every route served now."""
        return list(self._routes.values())

    def get(self, method: str, path: str) -> HandlerRoute | None:
        """The route for an exact method and path, if a loaded model serves one."""
        return self._routes.get((method, path))

    def attach(self, model: str, version: str, instance: object) -> None:
        """Add the handlers of a newly loaded instance, replacing those of its own older one.

        Raises :class:`ModelLoadError` (and adds none) if a path is taken by another model or
        refused by a transport's check.
        """
        new = [
            HandlerRoute(model, version, marker.rest_path, marker.rest_method, func)
            for marker, func in find_handlers(instance)
        ]
        seen: dict[tuple[str, str], HandlerRoute] = {}
        for route in new:
            twice = seen.setdefault((route.method, route.path), route)
            if twice is not route:
                raise _clash(route, f"{twice.func.__name__}() is served there too")
            taken = self._routes.get((route.method, route.path))
            if taken is not None and (taken.model, taken.version) != (model, version):
                raise _clash(route, f"it is already served by {taken.owner}")
            for check in self.checks:
                if reason := check(route):
                    raise _clash(route, reason)
        self.detach(model, version)
        self._routes.update({(r.method, r.path): r for r in new})

    def detach(self, model: str, version: str) -> None:
        """Remove the handlers of a model version (nothing if it has none)."""
        for key, route in list(self._routes.items()):
            if (route.model, route.version) == (model, version):
                del self._routes[key]


def _clash(route: HandlerRoute, reason: str) -> ModelLoadError:
    return ModelLoadError(
        f"Custom handler {route.method} {route.path} of {route.owner} cannot be served: {reason}",
        model=route.model,
        version=route.version or None,
    )
