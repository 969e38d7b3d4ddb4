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

`event.state` keeps keyed values, counters and sets in the host, on behalf
of that event (its hostname scopes the key, its ts is the time):

    if event.state.count("failed-login", 60_000) >= 5: ...

The component targets `dac:rule@0.2.0`: the host calls `evaluate` with a
batch of events and the values of the declared `fields` (by default the
prefilter's); the glue below calls the rule's function once per event.

Build with `rule-sdk/python/build.sh shadow.py -o shadow.wasm`.
"""

import traceback
from typing import Any, Callable, Dict, List, Optional, Sequence

import wit_world
from wit_world.imports import host, types
from wit_world.imports import state as _host_state
from wit_world.imports.types import Finding, MatchedField

__all__ = ["rule", "log", "Event", "State", "Finding", "MatchedField", "WitWorld"]

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

# The host refuses metadata declaring more (wit/rule.wit, `metadata.fields`);
# checking here fails the build rather than the load.
_MAX_FIELDS = 64
_U64 = 1 << 64

_metadata: Optional[types.Metadata] = None
_evaluate: Optional[Callable[[Any], Any]] = None
# Declared path -> its column in a batch's `fields.values` rows.
_columns: Dict[str, int] = {}


def rule(
    *,
    name: str,
    uuid: str,
    severity: str = "medium",
    version: str = "0.1.0",
    description: str = "",
    tags: Optional[List[str]] = None,
    prefilter: Optional[dict] = None,
    fields: Optional[Sequence[str]] = None,
) -> Callable:
    """Registers the decorated function as this component's rule.

    `fields` are the paths the function reads on (nearly) every event: the
    host sends their values with the batch, so reading them costs no call
    into the host. It defaults to the prefilter's fields; any other path is
    still readable, one host call per `event.get`.
    """
    if severity not in _SEVERITIES:
        raise ValueError(f"severity {severity!r}: expected one of {', '.join(_SEVERITIES)}")
    if fields is None:
        fields = list(prefilter.get("fields", [])) if prefilter is not None else []
    elif isinstance(fields, str):
        # A lone string would otherwise declare each of its letters.
        raise TypeError("fields: expected a list of paths, not a string")
    fields = list(fields)
    if not all(isinstance(path, str) for path in fields):
        raise TypeError(f"fields: expected paths as strings, got {fields!r}")
    if len(fields) > _MAX_FIELDS:
        raise ValueError(f"fields: {len(fields)} declared, the host accepts at most {_MAX_FIELDS}")

    def register(function: Callable[[Any], Any]) -> Callable[[Any], Any]:
        global _metadata, _evaluate, _columns
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
            fields=fields,
        )
        # The first column wins for a path declared twice; the host sends
        # the same value in both.
        _columns = {}
        for column, path in enumerate(fields):
            _columns.setdefault(path, column)
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
    """One event of the batch under evaluation; remembers what was read.

    Valid only while the rule's function runs on it: the batch it reads is
    the host's, lent for one call, and its position means another event in
    the next batch. Keeping an `Event` (or its `state`) and using it later
    raises.
    """

    def __init__(self, batch: types.Batch, position: int, row: List[types.Field], text: bytes) -> None:
        self._batch: Optional[types.Batch] = batch
        self._position = position
        self._row = row
        self._text = text
        self.read: List[MatchedField] = []

    def _live(self) -> types.Batch:
        if self._batch is None:
            raise RuntimeError("this event's evaluation is over: an Event is only valid inside the rule's call")
        return self._batch

    def _declared(self, column: int) -> Optional[types.Value]:
        # A host that sent fewer values than the rule declared leaves the
        # rest absent, as the Rust SDK does.
        if column >= len(self._row):
            return None
        field = self._row[column]
        if isinstance(field, types.Field_Text):
            span = field.value
            # The buffer holds UTF-8 the host produced, and a span ends on
            # a character boundary; "replace" only guards a broken host.
            return types.Value_Text(self._text[span.start : span.start + span.len].decode("utf-8", "replace"))
        if isinstance(field, types.Field_Value):
            return field.value
        return None

    def get(self, path: str, default: Any = None) -> Any:
        batch = self._live()
        column = _columns.get(path)
        value = self._declared(column) if column is not None else batch.get(self._position, path)
        if value is None or isinstance(value, types.Value_Null):
            return default
        if isinstance(value, _PLAIN):
            self._matched(path, value.value)
            return value.value
        return value

    def _matched(self, path: str, value: Any) -> None:
        # Reading a field twice is still one matched field.
        if all(field.path != path for field in self.read):
            self.read.append(MatchedField(path=path, value=str(value)))

    def get_segments(self, segments: Sequence[str], default: Any = None) -> Any:
        """`get` for a path whose keys contain dots: `["labels", "app.kubernetes.io/name"]`."""
        if isinstance(segments, str):
            # list("a.b") would read the path of its letters.
            raise TypeError("get_segments: expected a list of keys, not a string")
        value = self._live().get_segments(self._position, list(segments))
        if value is None or isinstance(value, types.Value_Null):
            return default
        if isinstance(value, _PLAIN):
            self._matched(".".join(segments), value.value)
            return value.value
        return value

    def keys(self, path: str = "") -> Optional[List[str]]:
        return self._live().keys(self._position, path)

    @property
    def state(self) -> "State":
        """The rule's keyed state in the host, on behalf of this event."""
        self._live()
        return State(self)

    def _end(self) -> None:
        self._batch = None
        self._row = []
        self._text = b""


def _text(name: str, value: str) -> str:
    # A str in the host; converting None or a number silently would make
    # keys like "None" collide, so anything else is refused.
    if not isinstance(value, str):
        raise TypeError(f"state: {name} is a str, got {type(value).__name__}")
    return value


def _millis(name: str, ms: int) -> int:
    # The WIT takes a u64; catching a float or a negative number here says
    # which argument was wrong instead of failing in the bindings.
    if not isinstance(ms, int) or isinstance(ms, bool):
        raise TypeError(f"state: {name} is an int of milliseconds, got {type(ms).__name__}")
    if not 0 <= ms < _U64:
        raise ValueError(f"state: {name} must be between 0 and 2**64 - 1, got {ms}")
    return ms


class State:
    """The rule's keyed state in the host (`dac:rule/state`), for one event.

    The host scopes every key by the event's `hostname` (a rule reads only
    what it wrote for the same host) and makes every operation at the
    event's `ts` (ms since the epoch), which TTLs and windows are measured
    from. The WIT names the event by its position in the batch; this
    object supplies it. Writes are visible to the rest of the batch and
    kept only if the whole call succeeds. See README.md and wit/rule.wit.
    """

    __slots__ = ("_event",)

    def __init__(self, event: Event) -> None:
        self._event = event

    def _position(self) -> int:
        self._event._live()
        return self._event._position

    def get(self, key: str) -> Optional[str]:
        """The value under `key`, unless unset or expired at the event's time."""
        return _host_state.get(self._position(), _text("key", key))

    def set(self, key: str, value: str, ttl_ms: int) -> bool:
        """Sets `key` to `value` until `ttl_ms` after the event's time; False when refused at the quota."""
        return _host_state.set(self._position(), _text("key", key), _text("value", value), _millis("ttl_ms", ttl_ms))

    def remove(self, key: str) -> None:
        """Removes the value under `key`, if any."""
        _host_state.remove(self._position(), _text("key", key))

    def count(self, key: str, window_ms: int) -> int:
        """Records one occurrence of `key`; the occurrences in the last `window_ms`, this one included."""
        return _host_state.count(self._position(), _text("key", key), _millis("window_ms", window_ms))

    def distinct(self, key: str, member: str, window_ms: int) -> int:
        """Records `member` in the set `key`; its distinct members in the last `window_ms`, this one included."""
        return _host_state.distinct(
            self._position(), _text("key", key), _text("member", member), _millis("window_ms", window_ms)
        )


def _findings(result: Any, view: Event) -> List[Finding]:
    assert _metadata is not None
    if result is None or result is False:
        return []
    if result is True:
        return [Finding(message=_metadata.description or _metadata.name, severity=None, matched=view.read)]
    if isinstance(result, str):
        return [Finding(message=result, severity=None, matched=view.read)]
    if isinstance(result, Finding):
        return [result]
    findings = list(result)
    # Checked here, inside the rule's call, so that the log names the
    # problem; the bindings would only trap on it after `evaluate` returned.
    for finding in findings:
        if not isinstance(finding, Finding):
            raise TypeError(f"the rule returned a list holding a {type(finding).__name__}, expected Finding")
    return findings


def _describe(error: BaseException) -> str:
    """The exception and where it was raised, innermost frames last.

    Not `traceback.format_exc()`: it reads the source lines through
    linecache, which opens the files, and the sandbox traps on that before
    the log line is written.
    """
    frames = [
        f'  File "{frame.f_code.co_filename}", line {line}, in {frame.f_code.co_name}'
        for frame, line in traceback.walk_tb(error.__traceback__)
    ]
    # The innermost frames, the rule's own, tell where; a deep recursion
    # would otherwise make the line longer than the host keeps.
    return "\n".join(["rule raised (most recent call last):", *frames[-8:], f"{type(error).__name__}: {error}"])


class WitWorld(wit_world.WitWorld):
    """The component's exports; componentize-py looks this class up by name."""

    def metadata(self) -> types.Metadata:
        if _metadata is None:
            raise RuntimeError("no rule registered: decorate one function with @dac_rule.rule(...)")
        return _metadata

    def evaluate(self, batch: types.Batch, fields: types.Fields) -> List[List[Finding]]:
        assert _evaluate is not None and _metadata is not None
        width = len(_metadata.fields)
        answers: List[List[Finding]] = []
        for position in range(fields.events):
            row = fields.values[position * width : (position + 1) * width]
            view = Event(batch, position, row, fields.text)
            try:
                answers.append(_findings(_evaluate(view), view))
            except BaseException as error:
                # The exception faults the whole call (the host discards
                # its state writes and retries the events one per call);
                # stderr is discarded in the sandbox, so the traceback
                # goes to the host's log, which names the rule.
                log("error", _describe(error))
                raise
            finally:
                view._end()
        return answers
