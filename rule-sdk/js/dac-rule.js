// The dac rule kit for JavaScript: a rule is one function and its metadata.
//
//   import { rule } from "../dac-rule.js";
//   export const { metadata, evaluate } = rule({
//     name: "…", uuid: "…", severity: "high",
//     prefilter: { fields: ["command_line"], literals: ["/etc/shadow"] },
//     evaluate(event) { return (event.get("command_line") ?? "").includes("/etc/shadow"); },
//   });
//
// `event.get(path)` reads a dotted path through the host as a plain value
// (string, number, bigint for integers, boolean; undefined when absent or
// null); other BSON types come back as the WIT variant `{ tag, val }`.
// `evaluate` returns true/false (one finding: the description as message,
// the fields it read as matched values), a message string, a finding
// `{ message, severity, matched: [{ path, value }] }`, or a list of them.

import { log as hostLog } from "dac:rule/host@0.1.0";

const SEVERITIES = ["informational", "low", "medium", "high", "critical"];
const PLAIN = new Set(["boolean", "integer", "float", "text"]);

export function log(level, message) {
  hostLog(level, String(message));
}

export function rule(spec) {
  if (!SEVERITIES.includes(spec.severity ?? "medium")) {
    throw new Error(`severity ${spec.severity}: expected one of ${SEVERITIES.join(", ")}`);
  }
  const meta = {
    name: spec.name,
    uuid: spec.uuid,
    version: spec.version ?? "0.1.0",
    severity: spec.severity ?? "medium",
    description: spec.description ?? "",
    tags: spec.tags ?? [],
    prefilter: spec.prefilter
      ? {
          fields: spec.prefilter.fields ?? [],
          literals: spec.prefilter.literals,
          asciiCaseInsensitive: spec.prefilter.asciiCaseInsensitive ?? false,
        }
      : undefined,
  };
  return {
    metadata: () => meta,
    evaluate(handle) {
      const read = [];
      const event = {
        get(path) {
          const value = handle.get(path);
          if (value === undefined || value === null || value.tag === "null") return undefined;
          if (PLAIN.has(value.tag)) {
            read.push({ path, value: String(value.val) });
            return value.val;
          }
          return value;
        },
        keys: (path = "") => handle.keys(path),
      };
      const result = spec.evaluate(event);
      if (result === undefined || result === null || result === false) return [];
      const finding = (message) => ({ message, severity: undefined, matched: read });
      if (result === true) return [finding(meta.description || meta.name)];
      if (typeof result === "string") return [finding(result)];
      return Array.isArray(result) ? result : [result];
    },
  };
}
