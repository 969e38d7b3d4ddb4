// Suspicious /etc/shadow Usage — the seed talk's rule, in JavaScript.
// The uuid differs from the Rust, C and Python versions so that all of them
// can load side by side.
import { rule } from "../dac-rule.js";

export const { metadata, evaluate } = rule({
  name: "Suspicious /etc/shadow Usage (JavaScript)",
  uuid: "c41f7a2e-5b83-4d9c-a0e6-7f2d1b8c3e54",
  severity: "high",
  description: "A command line references /etc/shadow, which holds the password hashes.",
  tags: ["attack.credential-access", "attack.t1003.008"],
  prefilter: { fields: ["command_line"], literals: ["/etc/shadow"] },
  evaluate(event) {
    const commandLine = event.get("command_line");
    return typeof commandLine === "string" && commandLine.includes("/etc/shadow");
  },
});
