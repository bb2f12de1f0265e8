"""Student values across the kernel boundary: JSON both ways, never code or pickles.

The grader judges a test cell in its own process, so it needs the student's answers out of the
student's kernel. Data crosses as tagged JSON; a function crosses as a handle that the grader
calls back into the kernel with JSON arguments. Whatever a kernel sends back is only ever data
to the grader: a kernel can choose its answers, never how they are judged.

`snapshot` and `call` run inside the student's kernel; `decode` runs in the grader.
"""

from __future__ import annotations

import ast
import builtins
import json
import math
import numbers
import re
import types
from collections.abc import Callable
from typing import Any

MAX_DEPTH = 40
MAX_ITEMS = 100_000
MAX_REPLY_CHARS = 16 * 1024 * 1024
# How IPython shows the string `snapshot` or `call` returns: one quoted literal, escapes and all.
STRING_REPR = re.compile(r"'(?:[^'\\\n]|\\.)*'" "|" r'"(?:[^"\\\n]|\\.)*"')
_HANDLES: dict[str, Callable[..., Any]] = {}  # in the kernel: callables the grader may call back


class Unreadable:
    """A student value the grader cannot read as data (an object, a module): using it fails."""

    def __init__(self, name: str, kind: str, shown: str) -> None:
        self._what = (
            f"{name} is a {kind} ({shown}); the grader reads answers as plain data or functions"
        )

    def __getattr__(self, attribute: str) -> Any:
        raise AssertionError(self._what)

    def __eq__(self, other: object) -> bool:
        return False

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"<unreadable: {self._what}>"


class StudentError(Exception):
    """The student's function failed in a way no test may catch as a wanted exception."""


def encode(value: Any, depth: int = 0) -> Any:
    """A JSON-ready form of `value`: containers tagged, callables as handles, the rest described."""
    if depth > MAX_DEPTH:
        raise ValueError("the value is nested too deeply to send to the grader")
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        number = float(value)
        return number if math.isfinite(number) else {"float": repr(number)}
    inner = depth + 1
    if isinstance(value, (list, tuple, set, frozenset)):
        if len(value) > MAX_ITEMS:
            raise ValueError(f"a {type(value).__name__} of {len(value)} items is too large to send")
        items = [encode(item, inner) for item in value]
        return (
            items
            if isinstance(value, list)
            else {type(value).__name__.replace("frozen", ""): items}
        )
    if isinstance(value, dict):
        return {"dict": [[encode(k, inner), encode(v, inner)] for k, v in value.items()]}
    if isinstance(value, types.ModuleType):
        return {"opaque": "module", "repr": value.__name__}
    if callable(value) and not isinstance(value, type):
        handle = f"h{len(_HANDLES)}"
        _HANDLES[handle] = value
        return {"callable": handle, "name": getattr(value, "__qualname__", type(value).__name__)}
    return {"opaque": type(value).__name__, "repr": repr(value)[:200]}


def snapshot(namespace: dict[str, Any], names: list[str]) -> str:
    """In the kernel: the named globals as JSON; a missing name is reported, not raised."""
    found: dict[str, Any] = {}
    for name in names:
        if name not in namespace:
            found[name] = {"missing": True}
            continue
        try:
            found[name] = {"value": encode(namespace[name])}
        except Exception as error:  # the student's object misbehaved: say so, as data
            found[name] = {
                "value": {"opaque": type(namespace[name]).__name__, "repr": str(error)[:200]}
            }
    return json.dumps(found)


def _revive(value: Any) -> Any:
    """In the kernel: the grader's arguments as Python values (handles become the callables)."""
    if isinstance(value, list):
        return [_revive(item) for item in value]
    if not isinstance(value, dict):
        return value
    if "callable" in value:
        return _HANDLES[value["callable"]]
    return _tagged(value, _revive)


def _tagged(value: dict[str, Any], inner: Callable[[Any], Any]) -> Any:
    if "tuple" in value:
        return tuple(inner(item) for item in value["tuple"])
    if "set" in value:
        return {inner(item) for item in value["set"]}
    if "dict" in value:
        return {inner(k): inner(v) for k, v in value["dict"]}
    if "float" in value:
        return float(value["float"])
    raise ValueError(f"unknown value tag in {sorted(value)}")


def call(handle: str, arguments: str) -> str:
    """In the kernel: call a handed-out function with JSON arguments; result or error as JSON."""
    if (
        handle not in _HANDLES
    ):  # a restarted kernel has lost it: never mistake that for the function's error
        return json.dumps({"lost": handle})
    positional, named = json.loads(arguments)
    args, kwargs = _revive(positional), {key: _revive(value) for key, value in named.items()}
    try:
        result = _HANDLES[handle](*args, **kwargs)
    except Exception as error:
        return json.dumps({"raised": type(error).__name__, "message": str(error)[:2000]})
    try:
        return json.dumps({"value": encode(result)})
    except Exception as error:
        return json.dumps(
            {"raised": "TypeError", "message": f"cannot send the result to the grader: {error}"}
        )


def arguments(args: tuple, kwargs: dict[str, Any]) -> str:
    """In the grader: a call's arguments as JSON for `call` (the grader's tests pass plain data)."""
    return json.dumps(
        [[_grader_encode(a) for a in args], {k: _grader_encode(v) for k, v in kwargs.items()}]
    )


def _grader_encode(value: Any) -> Any:
    if isinstance(value, StudentFunction):
        return {"callable": value.handle}
    if isinstance(value, (list, tuple, set, frozenset, dict)):
        if isinstance(value, dict):
            return {"dict": [[_grader_encode(k), _grader_encode(v)] for k, v in value.items()]}
        items = [_grader_encode(item) for item in value]
        return (
            items
            if isinstance(value, list)
            else {type(value).__name__.replace("frozen", ""): items}
        )
    return encode(value)


def shown_string(shown: str) -> str:
    """In the grader: the string a kernel's answer shows; other literals refused (may take GBs)."""
    if len(shown) > MAX_REPLY_CHARS:
        raise ValueError("the answer is larger than the grader accepts")
    if not STRING_REPR.fullmatch(shown):
        raise ValueError(
            "the kernel answered with something other than the string the grader asked for"
        )
    return ast.literal_eval(shown)


class StudentFunction:
    """A function that lives in the student's kernel; calling it runs it there, never here."""

    def __init__(self, handle: str, name: str, ask: Callable[[str], str]) -> None:
        self.handle, self.__name__, self._ask = handle, name, ask

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        reply = self._reply(f"call({self.handle!r}, {arguments(args, kwargs)!r})")
        if "lost" in reply:
            raise StudentError(f"{self.__name__} is gone: the kernel was restarted after it failed")
        if "raised" in reply:
            raised = getattr(builtins, reply["raised"], None)
            if (
                isinstance(raised, type)
                and issubclass(raised, Exception)
                and raised is not StopIteration
            ):
                raise raised(reply["message"])
            raise StudentError(f"{reply['raised']}: {reply['message']}")
        return reply["value"]

    def _reply(self, request: str) -> dict[str, Any]:
        """The kernel's reply, decoded; one made to break the reading is no exception to expect."""
        try:
            reply = json.loads(self._ask(request))
            if not isinstance(reply, dict) or not (
                "lost" in reply
                or "value" in reply
                or (isinstance(reply.get("raised"), str) and isinstance(reply.get("message"), str))
            ):
                raise ValueError("it is not a reply to a call")
            if "value" in reply:
                reply["value"] = decode(reply["value"], self._ask, self.__name__)
            return reply
        except (
            Exception
        ) as error:  # whatever the kernel sent: never an exception the test may catch as wanted
            raise StudentError(
                f"{self.__name__} sent the grader an answer it cannot read: {error}"
            ) from None

    def __repr__(self) -> str:
        return f"<student function {self.__name__}>"


def decode(value: Any, ask: Callable[[str], str], name: str = "value") -> Any:
    """In the grader: JSON from the kernel as plain data, `StudentFunction`s and `Unreadable`s."""
    if isinstance(value, list):
        return [decode(item, ask, name) for item in value]
    if not isinstance(value, dict):
        return value
    if "callable" in value:
        return StudentFunction(str(value["callable"]), str(value.get("name", name)), ask)
    if "opaque" in value:
        return Unreadable(name, str(value["opaque"]), str(value.get("repr", "")))
    return _tagged(value, lambda item: decode(item, ask, name))
