// The dac rule kit for JavaScript: a rule is one function and its metadata.
//
//   import { rule } from "../dac-rule.js";
//   export const { metadata, evaluate } = rule({
//     name: "…", uuid: "…", severity: "high",
//     prefilter: { fields: ["command_line"], literals: ["/etc/shadow"] },
//     evaluate(event) { return (event.get("command_line") ?? "").includes("/etc/shadow"); },
//   });
//
// `event.get(path)` reads a dotted path as a plain value (string, number,
// bigint for integers, boolean; undefined when absent or null); other BSON
// types come back as the WIT variant `{ tag, val }`. `event.state` is the
// rule's keyed state in the host, for this event (see `State` below).
// `evaluate` returns true/false (one finding: the description as message,
// the fields it read as matched values), a message string, a finding
// `{ message, severity, matched: [{ path, value }] }`, or a list of them.
//
// The component targets dac:rule@0.2.0: the host calls `evaluate` once per
// batch of events and hands the values of the declared `fields` along with
// it. The glue below turns that back into one `spec.evaluate(event)` call
// per event, so an author never sees batches or positions.

import { log as hostLog } from "dac:rule/host@0.2.0";
import * as hostState from "dac:rule/state@0.2.0";

const SEVERITIES = ["informational", "low", "medium", "high", "critical"];
const PLAIN = new Set(["boolean", "integer", "float", "text"]);
// The host accepts at most this many declared fields (wit/rule.wit).
const MAX_FIELDS = 64;
// WIT u64 is a BigInt in jco; authors pass milliseconds as numbers.
const U64_MAX = (1n << 64n) - 1n;
// One decoder for every batch: text values arrive as UTF-8 spans of one
// buffer. Not fatal, so a stray invalid byte reads as U+FFFD (as the Rust
// kit's from_utf8_lossy) instead of failing the whole batch.
const utf8 = new TextDecoder("utf-8");

export function log(level, message) {
  hostLog(level, String(message));
}

export function rule(spec) {
  if (!SEVERITIES.includes(spec.severity ?? "medium")) {
    throw new Error(`severity ${spec.severity}: expected one of ${SEVERITIES.join(", ")}`);
  }
  // The fields the host hands with every event. By default those the
  // prefilter names: a rule reads what it filters on.
  const fields = [...(spec.fields ?? spec.prefilter?.fields ?? [])];
  if (fields.length > MAX_FIELDS) {
    throw new Error(`fields: ${fields.length} declared, the host accepts at most ${MAX_FIELDS}`);
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
    fields,
  };
  // First declared position of each path: a lookup per `get` instead of a
  // scan of the list.
  const column = new Map();
  fields.forEach((path, j) => column.has(path) || column.set(path, j));

  return {
    metadata: () => meta,
    evaluate(batch, values) {
      const results = [];
      for (let index = 0; index < values.events; index++) {
        const event = new Event(batch, index, column, fields.length, values);
        try {
          results.push(findings(spec.evaluate(event), event.read, meta));
        } catch (error) {
          // An exception fails the whole call (the host then retries the
          // batch one event per call and keeps none of this call's state
          // writes); log why first, or the host could only report a trap.
          // (SpiderMonkey's `stack` holds the frames only, not the message.)
          const where = error instanceof Error && error.stack ? `\n${error.stack}` : "";
          log("error", `rule threw on event ${index} of the batch: ${error}${where}`);
          throw error;
        } finally {
          event.close();
        }
      }
      return results;
    },
  };
}

// The event under evaluation: one position in the host's batch.
class Event {
  #batch;
  #index;
  #column;
  #row; // this event's first value in `values.values`
  #values;
  #state;
  #open = true;
  /** The plain values read so far: a `true` or message result's matched fields. */
  read = [];

  constructor(batch, index, column, width, values) {
    this.#batch = batch;
    this.#index = index;
    this.#column = column;
    this.#row = index * width;
    this.#values = values;
  }

  // The batch is only lent for the one host call, and the position means
  // another event in the next batch: an event kept past its evaluation
  // (a closure, a module variable) must fail loudly, not read or write
  // on behalf of some other event.
  #live() {
    if (!this.#open) throw new Error("event used after its evaluation returned");
  }

  close() {
    this.#open = false;
  }

  get(path) {
    this.#live();
    const j = this.#column.get(path);
    const value = j === undefined ? this.#batch.get(this.#index, path) : this.#declared(j);
    if (value === undefined || value === null || value.tag === "null") return undefined;
    if (PLAIN.has(value.tag)) {
      this.read.push({ path, value: String(value.val) });
      return value.val;
    }
    return value;
  }

  // A declared field's value, from what came with the call: no host call.
  #declared(j) {
    const field = this.#values.values[this.#row + j];
    if (field === undefined || field.tag === "absent") return undefined;
    if (field.tag === "text") {
      const { start, len } = field.val;
      return { tag: "text", val: utf8.decode(this.#values.text.subarray(start, start + len)) };
    }
    return field.val;
  }

  /** The value at a path given as segments, for keys that contain dots. */
  getSegments(segments) {
    this.#live();
    const value = this.#batch.getSegments(this.#index, segments);
    if (value === undefined || value === null || value.tag === "null") return undefined;
    if (PLAIN.has(value.tag)) {
      this.read.push({ path: segments.join("."), value: String(value.val) });
      return value.val;
    }
    return value;
  }

  keys(path = "") {
    this.#live();
    return this.#batch.keys(this.#index, path);
  }

  /** The rule's keyed state in the host, on behalf of this event. */
  get state() {
    this.#live();
    return (this.#state ??= new State(this.#index, () => this.#live()));
  }
}

// Keyed state for one event: the host scopes keys by the event's hostname
// and times every operation by its `ts`, so each call names the event's
// position; this object supplies it.
class State {
  #index;
  #live;

  constructor(index, live) {
    this.#index = index;
    this.#live = live;
  }

  /** The value under `key` (a string), or undefined when unset or expired. */
  get(key) {
    this.#live();
    return hostState.get(this.#index, text("key", key)) ?? undefined;
  }

  /** Sets `key` to `value` for `ttlMs` of event time; false when refused at the quota. */
  set(key, value, ttlMs) {
    this.#live();
    return hostState.set(this.#index, text("key", key), text("value", value), millis("ttlMs", ttlMs));
  }

  remove(key) {
    this.#live();
    hostState.remove(this.#index, text("key", key));
  }

  /** Records one occurrence of `key`; how many fall in the last `windowMs`, this one included. */
  count(key, windowMs) {
    this.#live();
    return hostState.count(this.#index, text("key", key), millis("windowMs", windowMs));
  }

  /** Adds `member` to the set `key`; how many distinct members in the last `windowMs`. */
  distinct(key, member, windowMs) {
    this.#live();
    return hostState.distinct(this.#index, text("key", key), text("member", member), millis("windowMs", windowMs));
  }
}

// Keys and values are strings in the host. Numbers and the like convert as
// `String` does; undefined, null and objects are almost surely a bug (a key
// of "undefined" would silently collide), so they are refused.
function text(name, value) {
  if (typeof value === "string") return value;
  if (typeof value === "number" || typeof value === "bigint" || typeof value === "boolean") return String(value);
  throw new TypeError(`state ${name}: expected a string, got ${value === null ? "null" : typeof value}`);
}

// A duration in milliseconds as the host's u64. A negative one is already
// over (0: nothing reads it, the window holds nothing before this event);
// fractions round down; NaN is refused rather than guessed at.
function millis(name, ms) {
  if (typeof ms === "bigint") return ms < 0n ? 0n : ms > U64_MAX ? U64_MAX : ms;
  if (typeof ms !== "number" || Number.isNaN(ms)) {
    throw new TypeError(`state ${name}: expected a number of milliseconds, got ${ms}`);
  }
  if (ms <= 0) return 0n;
  if (ms === Infinity) return U64_MAX;
  const whole = BigInt(Math.floor(ms));
  return whole > U64_MAX ? U64_MAX : whole;
}

// The findings of one event, from what `spec.evaluate` returned.
function findings(result, read, meta) {
  if (result === undefined || result === null || result === false) return [];
  const finding = (message) => ({ message, severity: undefined, matched: read });
  if (result === true) return [finding(meta.description || meta.name)];
  if (typeof result === "string") return [finding(result)];
  return (Array.isArray(result) ? result : [result]).map((f) =>
    typeof f === "string"
      ? finding(f)
      : { message: String(f.message), severity: f.severity ?? undefined, matched: f.matched ?? read },
  );
}
