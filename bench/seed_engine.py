#!/usr/bin/env python3
"""The seed talk's detection engine, restated as the benchmark baseline.

dac's speed claims are made against this: the original's algorithm, with no
optimisation added. Each NDJSON line is parsed with json.loads, then every
rule's every field's every value is tested with Python's substring `in`
against that field of the log. Stdlib only, so the baseline runs anywhere
python3 does.

Usage:
    python3 bench/seed_engine.py EVENTS.ndjson
    python3 bench/seed_engine.py EVENTS.ndjson --rules '[{"name": ..., "uuid": ..., "detection_logic": {...}}]'
    python3 bench/seed_engine.py EVENTS.ndjson --rules-file rules.json

Prints one JSON object:
    {"events": N, "alerts": A, "seconds": S, "events_per_sec": R, "alerts_by_uuid": {...}}
"""

import argparse
import json
import sys
import time

# The seed talk's two rules, as its YAML files would load.
SEED_RULES = [
    {
        "name": "Suspicious /etc/shadow Usage",
        "uuid": "5e3566a3-9f19-4ac7-8710-ec5fb09260ed",
        "detection_logic": {"command_line": ["/etc/shadow"]},
    },
    {
        "name": "Output redirection to /tmp/ Directory",
        "uuid": "f825ad39-d4b1-41da-91ec-6438d8dc9ace",
        "detection_logic": {"command_line": ["> /tmp/"]},
    },
]


class Rule:
    """Attribute access (`rule.detection_logic`) as in the seed's rule objects."""

    def __init__(self, spec):
        self.name = spec["name"]
        self.uuid = spec["uuid"]
        self.detection_logic = spec["detection_logic"]


def load_rules(args):
    if args.rules_file:
        with open(args.rules_file, encoding="utf-8") as f:
            specs = json.load(f)
    elif args.rules:
        specs = json.loads(args.rules)
    else:
        specs = SEED_RULES
    # A single rule object is accepted too, for quick one-off runs.
    if isinstance(specs, dict):
        specs = [specs]
    return [Rule(s) for s in specs]


def run(path, rules):
    alerts_by_uuid = {rule.uuid: 0 for rule in rules}
    events = 0
    alerts = 0
    with open(path, encoding="utf-8") as f:
        # Only reading, parsing and matching are timed: interpreter start-up
        # and rule loading are not part of the per-event cost being compared.
        start = time.perf_counter()
        for line in f:
            if not line.strip():
                continue
            log = json.loads(line)
            events += 1
            for rule in rules:
                for field, values in rule.detection_logic.items():
                    for value in values:
                        # The seed raised an alert per matching value; it is
                        # counted rather than printed so terminal I/O does not
                        # dominate the measurement.
                        if value in log.get(field, ""):
                            alerts += 1
                            alerts_by_uuid[rule.uuid] += 1
        seconds = time.perf_counter() - start
    return {
        "events": events,
        "alerts": alerts,
        "seconds": seconds,
        "events_per_sec": events / seconds if seconds > 0 else None,
        "alerts_by_uuid": alerts_by_uuid,
    }


def main(argv=None):
    parser = argparse.ArgumentParser(
        description="Seed-talk detection engine baseline over an NDJSON event file."
    )
    parser.add_argument("events", help="NDJSON file, one event object per line")
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--rules", help="rules as a JSON list (or one JSON object)")
    source.add_argument("--rules-file", help="file holding rules as JSON")
    args = parser.parse_args(argv)
    result = run(args.events, load_rules(args))
    json.dump(result, sys.stdout)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
