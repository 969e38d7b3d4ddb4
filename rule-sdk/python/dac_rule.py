"""The dac rule kit for Python: a rule is one function and its metadata.

    from dac_rule import rule

    @rule(name="Suspicious /etc/shadow Usage", uuid="...", severity="high",
          prefilter={"fields": ["command_line"], "literals": ["/etc/shadow"]})
    def shadow(event) -> bool:
        return "/etc/shadow" in (event.get("command_line") or "")

`event.get(path)` reads a dotted path (`command_line`, `process.parent.pid`,
`argv.0`) as a plain Python value: str, int, float, bool, None when the
field is null *or absent*. Other BSON types come back as the WIT variant
(`Value_Datetime`, `Value_ObjectId`, `Value_Binary`, `Value_Array` and
`Value_Document` — containers carry their length only — `Value_Other`).

The function returns:
- `True` / `False` (the seed's form): one finding whose message is the
  rule's description (or name) and whose matched fields are the text and
  number fields the function read;
- a string: one finding with that message, matched fields as above;
- a `Finding` or a list of them, for full control;
- `None`, `False` or an empty list: no match.

Build with `rule-sdk/python/build.sh shadow.py -o shadow.wasm`.
"""

from typing import Any, Callable, List, Optional

import wit_world
from wit_world.imports import host, types
from wit_world.imports.types import Finding, MatchedField

__all__ = ["rule", "log", "Finding", "MatchedField", "WitWorld"]

_SEVERITIES = {
    "informational": types.Severity.INFORMATIONAL,
    "low": types.Severity.LOW,
    "medium": types.Severity.MEDIUM,
    "high": types.Severity.HIGH,
    "critical": types.Severity.CRITICAL,
}
_LEVELS = {
    "trace": host.Level.TRACE,
    "debug": host.Level.DEBUG,
    "info": host.Level.INFO,
    "warn": host.Level.WARN,
    "error": host.Level.ERROR,
}

_metadata: Optional[types.Metadata] = None
_evaluate: Optional[Callable[[Any], Any]] = None


def rule(
    *,
    name: str,
    uuid: str,
    severity: str = "medium",
    version: str = "0.1.0",
    description: str = "",
    tags: Optional[List[str]] = None,
    prefilter: Optional[dict] = None,
) -> Callable:
    """Registers the decorated function as this component's rule."""
    if severity not in _SEVERITIES:
        raise ValueError(f"severity {severity!r}: expected one of {', '.join(_SEVERITIES)}")

    def register(function: Callable[[Any], Any]) -> Callable[[Any], Any]:
        global _metadata, _evaluate
        if _evaluate is not None:
            raise RuntimeError("one rule per component: @rule was used twice")
        pre = None
        if prefilter is not None:
            pre = types.Prefilter(
                fields=list(prefilter.get("fields", [])),
                literals=list(prefilter["literals"]),
                ascii_case_insensitive=bool(prefilter.get("ascii_case_insensitive", False)),
            )
        _metadata = types.Metadata(
            name=name,
            uuid=uuid,
            version=version,
            severity=_SEVERITIES[severity],
            description=description,
            tags=list(tags or []),
            prefilter=pre,
        )
        _evaluate = function
        return function

    return register


def log(level: str, message: str) -> None:
    """Writes a log line attributed to this rule (rate-limited by the host)."""
    host.log(_LEVELS[level], message)


_PLAIN = (
    types.Value_Boolean,
    types.Value_Integer,
    types.Value_Float,
    types.Value_Text,
)


class Event:
    """The event under evaluation, read through the host; remembers what was read."""

    def __init__(self, handle: types.Event) -> None:
        self._handle = handle
        self.read: List[MatchedField] = []

    def get(self, path: str, default: Any = None) -> Any:
        value = self._handle.get(path)
        if value is None or isinstance(value, types.Value_Null):
            return default
        if isinstance(value, _PLAIN):
            self.read.append(MatchedField(path=path, value=str(value.value)))
            return value.value
        return value

    def keys(self, path: str = "") -> Optional[List[str]]:
        return self._handle.keys(path)


class WitWorld(wit_world.WitWorld):
    """The component's exports; componentize-py looks this class up by name."""

    def metadata(self) -> types.Metadata:
        if _metadata is None:
            raise RuntimeError("no rule registered: decorate one function with @dac_rule.rule(...)")
        return _metadata

    def evaluate(self, event: types.Event) -> List[Finding]:
        assert _evaluate is not None and _metadata is not None
        view = Event(event)
        result = _evaluate(view)
        if result is None or result is False:
            return []
        if result is True:
            return [Finding(message=_metadata.description or _metadata.name, severity=None, matched=view.read)]
        if isinstance(result, str):
            return [Finding(message=result, severity=None, matched=view.read)]
        if isinstance(result, Finding):
            return [result]
        return list(result)
