// A downloaded file made executable and run, on one host within ten
// minutes: an ordered sequence of three events, held together by the
// rule's keyed state in the host (`event.state`). The host scopes every key
// by the event's hostname, so the keys below need not name the host.
import { rule } from "../dac-rule.js";

const WINDOW_MS = 600_000;

export const { metadata, evaluate } = rule({
  name: "Downloaded file made executable and run",
  uuid: "8d0c3a5e-6c1b-4a57-9f0e-3c2d7b1e4a03",
  severity: "high",
  description:
    "A file downloaded with curl or wget is made executable with chmod and then run, on one host within 10 minutes.",
  tags: ["attack.command-and-control", "attack.t1105", "attack.execution"],
  // No prefilter: the three steps share no literal, and every exec must be
  // checked against the state. Every event reads these three paths.
  fields: ["binary", "arguments", "path"],
  evaluate(event) {
    const binary = event.get("binary");
    const args = tokens(event.get("arguments"));
    const ts = millis(event.get("ts"));

    if ((binary === "curl" || binary === "wget") && ts !== undefined) {
      const file = outputFile(binary, args);
      if (file !== undefined) event.state.set(`downloaded:${basename(file)}`, String(ts), WINDOW_MS);
    }

    if (binary === "chmod" && ts !== undefined && args.length > 0 && grantsExecute(args[0])) {
      for (const file of args.slice(1)) {
        const name = basename(file);
        const downloaded = event.state.get(`downloaded:${name}`);
        if (downloaded === undefined) continue;
        // The sequence must end within ten minutes of the download, not of
        // the chmod: the executable mark lives only as long as that is left.
        const deadline = Number(downloaded) + WINDOW_MS;
        if (ts < deadline) event.state.set(`executable:${name}`, downloaded, deadline - ts);
      }
    }

    const path = event.get("path");
    if (typeof path === "string") {
      const name = basename(path);
      if (event.state.get(`executable:${name}`) !== undefined) {
        // One alert per sequence: a second run of the file starts nothing.
        event.state.remove(`downloaded:${name}`);
        event.state.remove(`executable:${name}`);
        return {
          message: `${path} was downloaded, made executable and run within 10 minutes`,
          matched: [{ path: "path", value: path }],
        };
      }
    }
    return false;
  },
});

function tokens(text) {
  return typeof text === "string" ? text.split(/\s+/).filter((t) => t !== "") : [];
}

// `ts` is an integer (a bigint from `event.get`); epoch milliseconds fit a
// number exactly.
function millis(ts) {
  return typeof ts === "bigint" || typeof ts === "number" ? Number(ts) : undefined;
}

function basename(path) {
  return path.slice(path.lastIndexOf("/") + 1);
}

// The file curl (`-o FILE`, `--output FILE`, `--output=FILE`, or a short
// option group ending in o: `-sSfo FILE`) or wget (`-O FILE`,
// `--output-document FILE`, `--output-document=FILE`) writes to. The
// options are the tool's own: wget's `-o` is its log file, curl's `-O`
// takes no argument.
function outputFile(binary, args) {
  const [short, long] = binary === "curl" ? ["o", "--output"] : ["O", "--output-document"];
  for (let i = 0; i < args.length; i++) {
    const arg = args[i];
    if (arg.startsWith(`${long}=`)) return arg.slice(long.length + 1);
    const takesFile =
      arg === long ||
      arg === `-${short}` ||
      (binary === "curl" && arg.startsWith("-") && !arg.startsWith("--") && arg.endsWith("o"));
    if (takesFile) return args[i + 1];
  }
  return undefined;
}

// Whether a chmod mode grants execute: symbolic with an x (`+x`, `u+x`,
// `a+rx`) or octal with an odd digit (`755`, `0700`).
function grantsExecute(mode) {
  return mode.includes("x") || (/^[0-7]+$/.test(mode) && /[1357]/.test(mode));
}
