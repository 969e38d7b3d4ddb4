#!/usr/bin/env bash
# Builds a JavaScript dac rule into a component:
#   rule-sdk/js/build.sh path/to/rule.js [-o rule.wasm]
# Needs componentize-js (pinned below; the StarlingMonkey engine ships inside
# the npm package). It installs nothing: when the tool is missing it says how
# to get it. Looked up in $COMPONENTIZE_JS, then target/componentize-js, then PATH.
set -euo pipefail

COMPONENTIZE_JS_VERSION=0.23.0
kit=$(cd "$(dirname "$0")" && pwd)
. "$kit/../rule-args.sh"
parse_rule_args .js "$@"

tool=${COMPONENTIZE_JS:-}
if [ -z "$tool" ]; then
    if [ -x "$root/target/componentize-js/node_modules/.bin/componentize-js" ]; then
        tool=$root/target/componentize-js/node_modules/.bin/componentize-js
    else
        tool=$(command -v componentize-js || true)
    fi
fi
if [ -z "$tool" ] || ! command -v node >/dev/null 2>&1; then
    cat >&2 <<MSG
$0: componentize-js (and node) are needed. Install the pinned version under target/:
    mkdir -p $root/target/componentize-js
    (cd $root/target/componentize-js && npm install @bytecodealliance/componentize-js@$COMPONENTIZE_JS_VERSION)
(or point COMPONENTIZE_JS at a componentize-js $COMPONENTIZE_JS_VERSION)
MSG
    exit 3
fi
found=$("$tool" --version)
if [ "$found" != "$COMPONENTIZE_JS_VERSION" ]; then
    echo "$0: $tool is componentize-js $found; this kit is tested with $COMPONENTIZE_JS_VERSION" >&2
    exit 3
fi

mkdir -p "$(dirname "$out")"
out=$(cd "$(dirname "$out")" && pwd)/$(basename "$out")
# The engine resolves imports against its working directory: build in a
# scratch directory holding the rule and the kit's dac-rule.js side by side.
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cp "$kit/dac-rule.js" "$work/dac-rule.js"
sed -E 's#from "[^"]*dac-rule\.js"#from "./dac-rule.js"#' "$rule" > "$work/rule.js"
# --wit wit/: the dac:rule@0.2.0 package (the parser reads only the .wit
# files at the top of the directory, so 0.1.0/ beside them is not mixed in).
# -d http fetch-event: no wasi:http import (dac would trap it anyway).
(cd "$work" && "$tool" rule.js --wit "$root/wit" --world-name rule -d http fetch-event -o "$out" >&2)
echo "$out"
