#!/usr/bin/env python3
"""Patch an installed nx-27017 0.8.1 so the official MongoDB drivers can use
its change streams. See README.md next to this file for each defect.

Run it with the venv's own interpreter (it patches the package that
interpreter imports):

    <venv>/bin/python tests/mongo/patch_nx27017.py

Safe by construction:
  * refuses unless nx-27017 is exactly 0.8.1 and neosqlite exactly 1.17.2
    (the versions these patches were written and tested against);
  * checks, before changing any file, that every patch is either already
    applied (its marker and replacement text found) or applicable (its
    anchor text found exactly once);
  * idempotent: re-running on a patched install changes nothing.

Exit status: 0 when the install is (now) fully patched, 1 otherwise.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

NX_VERSION = "0.8.1"
NEOSQLITE_VERSION = "1.17.2"


@dataclass(frozen=True)
class Patch:
    number: int
    summary: str
    file: str  # relative to the nx_27017 package directory
    hunks: tuple[tuple[str, str], ...]  # (anchor, replacement)

    @property
    def marker(self) -> str:
        return f"dac-patch({self.number})"


PATCHES = (
    Patch(
        1,
        "change-stream cursor ids start at 2**31 (+ random) so they are BSON int64",
        "changestream.py",
        (
            (
                "_cursor_id_counter = count(1000)\n",
                "# dac-patch(1): start at 2**31 so BSON encodes every id as int64\n"
                "# (drivers require int64 cursor ids), at a random offset so a\n"
                "# restarted server never reuses an id a client still holds;\n"
                "# stays far below the data-cursor ids (10**12+).\n"
                "import random as _dac_random  # noqa: E402\n"
                "\n"
                "_cursor_id_counter = count(2**31 + _dac_random.randrange(2**36))\n",
            ),
        ),
    ),
    Patch(
        2,
        "decode fullDocument with neosqlite's decoder; documentKey._id from the document",
        "changestream.py",
        (
            (
                "                full_doc = json.loads(data)\n",
                "                # dac-patch(2): neosqlite's own decoder restores ObjectId,\n"
                "                # Binary and datetime (plain json.loads left its storage\n"
                "                # wrappers in the document).\n"
                "                from neosqlite.collection.json_helpers import (\n"
                "                    neosqlite_json_loads,\n"
                "                )\n"
                "\n"
                "                full_doc = neosqlite_json_loads(data)\n",
            ),
            (
                '            "documentKey": {"_id": actual_id},\n',
                "            # dac-patch(2): the stored document keeps the _id's type\n"
                "            # (the trigger's _id column is TEXT: int ids became strings).\n"
                '            "documentKey": {\n'
                '                "_id": full_doc["_id"]\n'
                '                if isinstance(full_doc, dict) and "_id" in full_doc\n'
                "                else actual_id\n"
                "            },\n",
            ),
        ),
    ),
    Patch(
        3,
        "clusterTime is a BSON Timestamp, not a Date",
        "changestream.py",
        (
            (
                '            "clusterTime": now,\n',
                "            # dac-patch(3): clusterTime is a BSON Timestamp (seconds,\n"
                "            # increment); the changelog row id keeps it unique.\n"
                '            "clusterTime": __import__("bson").Timestamp(\n'
                "                int(now.timestamp()), rowid % 2**32 or 1\n"
                "            ),\n",
            ),
        ),
    ),
    Patch(
        4,
        "getMore on an unknown cursor fails with CursorNotFound (43)",
        "handler.py",
        (
            (
                "            if data is not None:\n"
                '                return request_id, {"ok": 1, "cursor": data}\n'
                "            else:\n"
                "                return request_id, {\n"
                '                    "ok": 1,\n'
                '                    "cursor": {\n'
                '                        "id": 0,\n'
                '                        "ns": f"{db_name}.{coll_name}",\n'
                '                        "nextBatch": [],\n'
                "                    },\n"
                "                }\n",
                "            if data is not None:\n"
                '                return request_id, {"ok": 1, "cursor": data}\n'
                "            else:\n"
                "                # dac-patch(4): an unknown cursor (e.g. after a server\n"
                "                # restart) is CursorNotFound, as in MongoDB, so drivers\n"
                "                # resume a change stream instead of ending it.\n"
                "                return request_id, {\n"
                '                    "ok": 0,\n'
                '                    "errmsg": f"cursor id {cursor_id} not found",\n'
                '                    "code": 43,\n'
                '                    "codeName": "CursorNotFound",\n'
                "                }\n",
            ),
        ),
    ),
    Patch(
        5,
        "getMore on a change stream waits up to maxTimeMS (default 1 s) for events",
        "server.py",
        (
            (
                "async def handle_client(\n",
                "# dac-patch(5): a change-stream getMore with nothing to return waits,\n"
                "# like MongoDB's awaitData cursors, up to its maxTimeMS (the driver's\n"
                "# maxAwaitTimeMS; MongoDB's default is 1 s), re-polling every 10 ms.\n"
                "# The wait is an asyncio sleep outside the handler, so it holds\n"
                "# neither a worker thread nor the database lock.\n"
                "_DAC_POLL_SECONDS = 0.01\n"
                "\n"
                "\n"
                "def _dac_getmore_deadline(msg):\n"
                "    for section_type, doc in msg.get(\"sections\", ()):\n"
                "        if section_type == \"body\" and isinstance(doc, dict):\n"
                "            if \"getMore\" not in doc:\n"
                "                return None\n"
                "            wait_ms = doc.get(\"maxTimeMS\") or 1000\n"
                "            return time.monotonic() + min(float(wait_ms), 60_000) / 1000\n"
                "    return None\n"
                "\n"
                "\n"
                "def _dac_empty_live_batch(response):\n"
                "    cursor = response.get(\"cursor\") if isinstance(response, dict) else None\n"
                "    return (\n"
                "        isinstance(cursor, dict)\n"
                "        and cursor.get(\"id\", 0) != 0\n"
                "        and \"postBatchResumeToken\" in cursor\n"
                "        and not cursor.get(\"nextBatch\")\n"
                "    )\n"
                "\n"
                "\n"
                "async def handle_client(\n",
            ),
            (
                "                            request_id, response_doc = await asyncio.to_thread(\n"
                "                                handler.handle_command, msg\n"
                "                            )\n",
                "                            request_id, response_doc = await asyncio.to_thread(\n"
                "                                handler.handle_command, msg\n"
                "                            )\n"
                "                            # dac-patch(5): await change-stream events.\n"
                "                            deadline = _dac_getmore_deadline(msg)\n"
                "                            while (\n"
                "                                deadline is not None\n"
                "                                and _dac_empty_live_batch(response_doc)\n"
                "                                and time.monotonic() < deadline\n"
                "                            ):\n"
                "                                await asyncio.sleep(_DAC_POLL_SECONDS)\n"
                "                                request_id, response_doc = await asyncio.to_thread(\n"
                "                                    handler.handle_command, msg\n"
                "                                )\n",
            ),
        ),
    ),
    Patch(
        6,
        "the change history is a window of the newest rows per collection, not relative to streams",
        "changestream.py",
        (
            (
                "_RESUME_RETENTION_ROWS = 1000\n",
                "_RESUME_RETENTION_ROWS = 1000\n"
                "\n"
                "# dac-patch(6): the change history is a window of the newest rows\n"
                "# of each collection, as MongoDB's oplog is a window of the newest\n"
                "# operations (sized in bytes there), whatever any stream has read.\n"
                "# 0.8.1 kept 1000 rows relative to the slowest open stream, so a\n"
                "# consumer's stored token (which lags what its stream has read)\n"
                "# fell out of the history whenever it lagged by 1000 rows, and a\n"
                "# consumer killed then resumed past a silent gap. The window is\n"
                "# NX_DAC_HISTORY_ROWS rows (tests shrink it to provoke patch 7);\n"
                "# it is pruned once per tenth of a window of new rows.\n"
                "import os as _dac_os  # noqa: E402\n"
                "\n"
                "_DAC_HISTORY_ROWS = max(1, int(_dac_os.environ.get(\"NX_DAC_HISTORY_ROWS\", \"100000\")))\n"
                "\n"
                "\n"
                "def _dac_prune_window(tracker: dict, collection_name: str) -> None:\n"
                "    db = tracker[\"collection\"].db\n"
                "    newest = db.execute(\"SELECT COALESCE(MAX(id), 0) FROM _neosqlite_changestream\").fetchone()[0]\n"
                "    if newest - tracker.get(\"dac_pruned_at\", 0) < max(1, _DAC_HISTORY_ROWS // 10):\n"
                "        return\n"
                "    tracker[\"dac_pruned_at\"] = newest\n"
                "    oldest_kept = db.execute(\n"
                "        \"SELECT id FROM _neosqlite_changestream WHERE collection_name = ? \"\n"
                "        \"ORDER BY id DESC LIMIT 1 OFFSET ?\",\n"
                "        (collection_name, _DAC_HISTORY_ROWS - 1),\n"
                "    ).fetchone()\n"
                "    if oldest_kept is None:\n"
                "        return\n"
                "    through = int(oldest_kept[0]) - 1\n"
                "    db.execute(\n"
                "        \"DELETE FROM _neosqlite_changestream WHERE collection_name = ? AND id <= ?\",\n"
                "        (collection_name, through),\n"
                "    )\n"
                "    # Remembered so a token from before the window is refused\n"
                "    # (patch 7), across server restarts on a file database too.\n"
                "    db.execute(\n"
                "        \"CREATE TABLE IF NOT EXISTS _dac_changestream_pruned \"\n"
                "        \"(collection_name TEXT PRIMARY KEY, through INTEGER NOT NULL)\"\n"
                "    )\n"
                "    db.execute(\n"
                "        \"INSERT INTO _dac_changestream_pruned VALUES (?, ?) ON CONFLICT(collection_name) \"\n"
                "        \"DO UPDATE SET through = MAX(through, excluded.through)\",\n"
                "        (collection_name, through),\n"
                "    )\n",
            ),
            (
                "        floor = min(marks)\n"
                "        if floor <= 0:\n"
                "            return\n"
                "        try:\n"
                "            tracker[\"collection\"].db.execute(\n"
                "                \"DELETE FROM _neosqlite_changestream \"\n"
                "                \"WHERE collection_name = ? AND id < ? AND id NOT IN (\"\n"
                "                \"SELECT id FROM _neosqlite_changestream \"\n"
                "                \"WHERE collection_name = ? ORDER BY id DESC LIMIT ?)\",\n"
                "                (\n"
                "                    collection_name,\n"
                "                    floor,\n"
                "                    collection_name,\n"
                "                    _RESUME_RETENTION_ROWS,\n"
                "                ),\n"
                "            )\n",
                "        # dac-patch(6): a window of the newest rows, not relative to\n"
                "        # the streams' read positions (see _dac_prune_window).\n"
                "        try:\n"
                "            _dac_prune_window(tracker, collection_name)\n",
            ),
        ),
    ),
    Patch(
        7,
        "a token (or an open stream) older than the history window is ChangeStreamHistoryLost (286)",
        "changestream.py",
        (
            (
                "            if rowid is not None:\n"
                "                watermark = rowid\n",
                "            if rowid is not None:\n"
                "                # dac-patch(7): a token from before the history window\n"
                "                # fails, as in MongoDB, instead of resuming silently at\n"
                "                # the oldest kept row (a gap the client cannot see).\n"
                "                if get_collection is not None:\n"
                "                    _dac_check_history(get_collection().db, collection_name, rowid)\n"
                "                watermark = rowid\n",
            ),
            (
                "def _wire_token(rowid: int) -> dict[str, str]:\n",
                "class DacChangeStreamHistoryLost(Exception):\n"
                "    \"\"\"dac-patch(7): MongoDB's error for a token older than the history.\"\"\"\n"
                "\n"
                "    code = 286\n"
                "    code_name = \"ChangeStreamHistoryLost\"\n"
                "\n"
                "\n"
                "def _dac_check_history(db: Any, collection_name: str, rowid: int) -> None:\n"
                "    try:\n"
                "        row = db.execute(\n"
                "            \"SELECT through FROM _dac_changestream_pruned WHERE collection_name = ?\",\n"
                "            (collection_name,),\n"
                "        ).fetchone()\n"
                "    except Exception:  # no table yet: nothing was ever pruned\n"
                "        return\n"
                "    if row is not None and rowid < int(row[0]):\n"
                "        raise DacChangeStreamHistoryLost(\n"
                "            f\"Resume of change stream was not possible, as the resume point \"\n"
                "            f\"(changelog row {rowid}) may no longer be in the history \"\n"
                "            f\"(rows through {int(row[0])} were pruned)\"\n"
                "        )\n"
                "\n"
                "\n"
                "def _wire_token(rowid: int) -> dict[str, str]:\n",
            ),
            (
                "        collection = tracker[\"collection\"]\n"
                "        try:\n"
                "            # Updated documents may be stored as JSONB binary blobs\n",
                "        collection = tracker[\"collection\"]\n"
                "        # dac-patch(7): an open stream that fell behind the window\n"
                "        # fails too (MongoDB kills its cursor) rather than skip rows.\n"
                "        _dac_check_history(collection.db, stream.collection_name, stream._watermark)\n"
                "        try:\n"
                "            # Updated documents may be stored as JSONB binary blobs\n",
            ),
        ),
    ),
    Patch(
        8,
        "a change-stream error carries its MongoDB code (e.g. 286), so drivers can act on it",
        "handler.py",
        (
            (
                "            logger.error(f\"Error in change stream: {e}\")\n"
                "            return request_id, {\"ok\": 0, \"errmsg\": str(e)}\n",
                "            logger.error(f\"Error in change stream: {e}\")\n"
                "            # dac-patch(8): keep the error's MongoDB code (patch 7's\n"
                "            # ChangeStreamHistoryLost): without one, drivers see an\n"
                "            # unknown error and cannot tell it from a transient one.\n"
                "            if hasattr(e, \"code\") and hasattr(e, \"code_name\"):\n"
                "                return request_id, {\n"
                "                    \"ok\": 0,\n"
                "                    \"errmsg\": str(e),\n"
                "                    \"code\": e.code,\n"
                "                    \"codeName\": e.code_name,\n"
                "                }\n"
                "            return request_id, {\"ok\": 0, \"errmsg\": str(e)}\n",
            ),
            (
                "                next_batch, token = self._change_stream_manager.pull_stream(\n"
                "                    stream, self._first_batch_size(cmd_copy)\n"
                "                )\n",
                "                # dac-patch(8): a stream behind the history window\n"
                "                # (patch 7) answers ChangeStreamHistoryLost and is closed.\n"
                "                try:\n"
                "                    next_batch, token = self._change_stream_manager.pull_stream(\n"
                "                        stream, self._first_batch_size(cmd_copy)\n"
                "                    )\n"
                "                except Exception as e:\n"
                "                    if not (hasattr(e, \"code\") and hasattr(e, \"code_name\")):\n"
                "                        raise\n"
                "                    self._change_stream_manager.close_stream(stream._id)\n"
                "                    return request_id, {\n"
                "                        \"ok\": 0,\n"
                "                        \"errmsg\": str(e),\n"
                "                        \"code\": e.code,\n"
                "                        \"codeName\": e.code_name,\n"
                "                    }\n",
            ),
        ),
    ),
)


def fail(message: str) -> NoReturn:
    print(f"patch_nx27017: error: {message}", file=sys.stderr)
    sys.exit(1)


def installed_version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def package_dir() -> Path:
    spec = importlib.util.find_spec("nx_27017")
    if spec is None or not spec.submodule_search_locations:
        fail(f"package nx_27017 not importable by {sys.executable}")
    return Path(next(iter(spec.submodule_search_locations)))


def state(patch: Patch, text: str) -> str:
    """'applied', 'pending', or a description of why neither holds."""
    if patch.marker in text:
        for _anchor, replacement in patch.hunks:
            if text.count(replacement) != 1:
                return "marker present but its replacement text is not found exactly once (partially applied or edited)"
        return "applied"
    for anchor, _replacement in patch.hunks:
        n = text.count(anchor)
        if n != 1:
            return f"anchor text found {n} times, expected exactly once:\n{anchor}"
    return "pending"


def main() -> None:
    for dist, wanted in (("nx-27017", NX_VERSION), ("neosqlite", NEOSQLITE_VERSION)):
        found = installed_version(dist)
        if found != wanted:
            fail(
                f"{dist} {found or '(not installed)'} found in {sys.prefix}; these patches are "
                f"written for exactly {dist}=={wanted}. Install the pinned versions "
                f"(pip install nx-27017=={NX_VERSION} neosqlite=={NEOSQLITE_VERSION}) or re-check "
                "every patch against the new source before changing the pins."
            )
    root = package_dir()

    # Check everything first: change no file unless every patch can apply.
    texts: dict[str, str] = {}
    states: list[tuple[Patch, str]] = []
    problems = []
    for patch in PATCHES:
        path = root / patch.file
        if patch.file not in texts:
            texts[patch.file] = path.read_text(encoding="utf-8")
        st = state(patch, texts[patch.file])
        states.append((patch, st))
        if st not in ("applied", "pending"):
            problems.append(f"patch {patch.number} ({patch.file}): {st}")
    if problems:
        fail("refusing to change anything:\n  " + "\n  ".join(problems))

    changed: set[str] = set()
    for patch, st in states:
        if st == "applied":
            print(f"patch {patch.number}: already applied: {patch.summary}")
            continue
        text = texts[patch.file]
        for anchor, replacement in patch.hunks:
            text = text.replace(anchor, replacement, 1)
        texts[patch.file] = text
        changed.add(patch.file)
        print(f"patch {patch.number}: applied: {patch.summary}")

    for name in sorted(changed):
        path = root / name
        tmp = path.with_suffix(".py.dac-tmp")
        tmp.write_text(texts[name], encoding="utf-8")
        os.replace(tmp, path)  # atomic: a concurrent reader sees old or new

    # Verify the result parses and reports every patch applied.
    for name in sorted(texts):
        compile(texts[name], str(root / name), "exec")
    for patch in PATCHES:
        if state(patch, texts[patch.file]) != "applied":
            fail(f"patch {patch.number} did not apply cleanly")
    print(f"nx-27017 {NX_VERSION} at {root}: all {len(PATCHES)} patches applied")


if __name__ == "__main__":
    main()
