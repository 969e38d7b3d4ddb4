"""Suspicious /etc/shadow Usage — the seed talk's Python rule, for dac.

The seed's version was:

    def rule(event: dict) -> bool:
        if "/etc/shadow" in event.get("command_line"):
            return True
        return False

Here the same function reads the event through the host and registers its
metadata with `@rule`. The uuid differs from the Rust and YAML versions so
that all three can load side by side.
"""

from dac_rule import rule


@rule(
    name="Suspicious /etc/shadow Usage (Python)",
    uuid="0b7e2f4c-6d1a-4c59-9e83-2a5f1c7d9b40",
    severity="high",
    description="A command line references /etc/shadow, which holds the password hashes.",
    tags=["attack.credential-access", "attack.t1003.008"],
    prefilter={"fields": ["command_line"], "literals": ["/etc/shadow"]},
)
def shadow(event) -> bool:
    command_line = event.get("command_line")
    if isinstance(command_line, str) and "/etc/shadow" in command_line:
        return True
    return False
