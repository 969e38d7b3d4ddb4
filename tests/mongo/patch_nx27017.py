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
        "pruning keeps the retention rows below the slowest open stream, not the newest rows",
        "changestream.py",
        (
            (
                "                \"DELETE FROM _neosqlite_changestream \"\n"
                "                \"WHERE collection_name = ? AND id < ? AND id NOT IN (\"\n"
                "                \"SELECT id FROM _neosqlite_changestream \"\n"
                "                \"WHERE collection_name = ? ORDER BY id DESC LIMIT ?)\",\n"
                "                (\n"
                "                    collection_name,\n"
                "                    floor,\n"
                "                    collection_name,\n"
                "                    _RESUME_RETENTION_ROWS,\n"
                "                ),\n",
                "                # dac-patch(6): keep the retention rows just BELOW the\n"
                "                # slowest open stream's watermark (the floor), as\n"
                "                # documented, not the newest rows of the whole log: a\n"
                "                # consumer's stored token lags its stream's read position\n"
                "                # (read, not yet committed), and while writers run ahead\n"
                "                # the newest 1000 rows are all above the floor, so every\n"
                "                # row between that token and the floor was deleted and a\n"
                "                # client SIGKILLed before committing resumed past a gap.\n"
                "                \"DELETE FROM _neosqlite_changestream \"\n"
                "                \"WHERE collection_name = ? AND id < ? AND id NOT IN (\"\n"
                "                \"SELECT id FROM _neosqlite_changestream \"\n"
                "                \"WHERE collection_name = ? AND id < ? \"\n"
                "                \"ORDER BY id DESC LIMIT ?)\",\n"
                "                (\n"
                "                    collection_name,\n"
                "                    floor,\n"
                "                    collection_name,\n"
                "                    floor,\n"
                "                    _RESUME_RETENTION_ROWS,\n"
                "                ),\n",
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
