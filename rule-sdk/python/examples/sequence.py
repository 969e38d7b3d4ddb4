"""Downloaded file made executable and run — an ordered sequence, in state.

Three events of one host, each seen on its own, in stream order:

1. `curl` or `wget` writes a file: remember its name for ten minutes
   (`downloaded:NAME` = the download's ts);
2. `chmod` grants execute on it within those ten minutes: remember that
   until ten minutes after the download (`executable:NAME` = the same ts);
3. a process runs from a path with that name: alert once and forget both.

The host keys the state by the event's hostname, so a file fetched on one
host and run on another is not a sequence, and measures the TTLs in the
events' ts, so a replay finds what a live run finds. Files are matched by
name (the text after the last '/') because a download to `run.sh`, made
executable as `run.sh`, runs as `/home/ci/run.sh`.
"""

from dac_rule import Finding, MatchedField, rule

WINDOW_MS = 10 * 60 * 1000


def basename(path: str) -> str:
    return path.rsplit("/", 1)[-1]


def output_file(binary: str, arguments: str):
    """The file `curl` or `wget` writes, as its arguments name it, or None."""
    tokens = arguments.split()
    if binary == "curl":
        flags, prefix = ("-o", "--output"), "--output="
    else:
        # wget's `-o` is its log file; `-O` is the download.
        flags, prefix = ("-O", "--output-document"), "--output-document="
    for at, token in enumerate(tokens):
        if token.startswith(prefix):
            return token[len(prefix) :]
        takes_file = token in flags or (
            # curl's short options combine, the one taking a value last: -sSfo FILE.
            binary == "curl" and token.startswith("-") and not token.startswith("--") and token.endswith("o")
        )
        if takes_file:
            return tokens[at + 1] if at + 1 < len(tokens) else None
    return None


def grants_execute(mode: str) -> bool:
    """`+x`, `u+x`, `a+rx`, or an octal mode with an execute bit (`755`, `0700`)."""
    if "x" in mode:
        return True
    octal = mode != "" and all(c in "01234567" for c in mode)
    return octal and any(c in "1357" for c in mode)


def timestamp(event):
    """The event's ts (ms since the epoch), read only by the events that need it."""
    ts = event.get("ts")
    # bool is an int in Python; a `true` ts is no time.
    return ts if isinstance(ts, int) and not isinstance(ts, bool) else None


def remember_download(event, binary: str, arguments: str) -> None:
    file = output_file(binary, arguments)
    name = basename(file) if file else ""
    ts = timestamp(event)
    if name and ts is not None:
        # A write refused at the host's quota (False) is counted by the
        # host; this sequence then cannot complete, which is all a rule at
        # its quota can do.
        event.state.set("downloaded:" + name, str(ts), WINDOW_MS)


def remember_executable(event, arguments: str) -> None:
    tokens = arguments.split()
    if not tokens or not grants_execute(tokens[0]):
        return
    ts = timestamp(event)
    if ts is None:
        # Without the event's time there is no ten minutes to measure.
        return
    for file in tokens[1:]:
        name = basename(file)
        downloaded = event.state.get("downloaded:" + name) if name else None
        if downloaded is None:
            continue
        download_ts = int(downloaded)  # this rule wrote it: str(ts)
        deadline = download_ts + WINDOW_MS
        if ts < deadline:
            # Executable until ten minutes after the download, not after the chmod.
            event.state.set("executable:" + name, str(download_ts), deadline - ts)


@rule(
    name="Downloaded file made executable and run",
    uuid="8d0c3a5e-6c1b-4a57-9f0e-3c2d7b1e4a02",
    severity="high",
    description="A file downloaded with curl or wget was made executable with chmod and run, on one host within 10 minutes.",
    tags=["attack.execution", "attack.t1105", "attack.t1222.002"],
    # Every event may be the exec of a downloaded file: no prefilter.
    fields=["binary", "arguments", "path"],
)
def sequence(event):
    binary = event.get("binary")
    arguments = event.get("arguments")
    path = event.get("path")

    if isinstance(path, str):
        name = basename(path)
        if name and event.state.get("executable:" + name) is not None:
            # One alert per sequence: a second run of the file is not new.
            event.state.remove("downloaded:" + name)
            event.state.remove("executable:" + name)
            message = f"{path} was downloaded, made executable and run within 10 minutes"
            return Finding(message=message, severity=None, matched=[MatchedField(path="path", value=path)])

    if not isinstance(arguments, str):
        return None
    if binary in ("curl", "wget"):
        remember_download(event, binary, arguments)
    elif binary == "chmod":
        remember_executable(event, arguments)
    return None
