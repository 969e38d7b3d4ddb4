#!/usr/bin/env bash
# Builds a Python dac rule into a component:
#   rule-sdk/python/build.sh path/to/rule.py [-o rule.wasm]
# Needs componentize-py (pinned below). It installs nothing: when the tool is
# missing it says how to get it. Looked up in $COMPONENTIZE_PY, then the
# repository's venv target/componentize-py-venv, then PATH.
set -euo pipefail

COMPONENTIZE_PY_VERSION=0.25.1
kit=$(cd "$(dirname "$0")" && pwd)
. "$kit/../rule-args.sh"
parse_rule_args .py "$@"
case $rule in *.py) ;; *) echo "$0: $rule: expected a .py file" >&2; exit 2 ;; esac
module=$(basename "$rule" .py)

tool=${COMPONENTIZE_PY:-}
if [ -z "$tool" ]; then
    if [ -x "$root/target/componentize-py-venv/bin/componentize-py" ]; then
        tool=$root/target/componentize-py-venv/bin/componentize-py
    else
        tool=$(command -v componentize-py || true)
    fi
fi
if [ -z "$tool" ]; then
    cat >&2 <<MSG
$0: componentize-py is not installed. Install the pinned version into the repository's venv:
    python3 -m venv $root/target/componentize-py-venv
    $root/target/componentize-py-venv/bin/pip install componentize-py==$COMPONENTIZE_PY_VERSION
(or point COMPONENTIZE_PY at a componentize-py $COMPONENTIZE_PY_VERSION binary)
MSG
    exit 3
fi
found=$("$tool" --version | awk '{print $2}')
if [ "$found" != "$COMPONENTIZE_PY_VERSION" ]; then
    echo "$0: $tool is componentize-py $found; this kit is tested with $COMPONENTIZE_PY_VERSION" >&2
    exit 3
fi

# componentize-py wants the module that defines `WitWorld`: a short entry
# module imports the rule (which registers itself) and the kit's WitWorld.
# The build imports them in a CPython that writes __pycache__/ next to the
# sources and ignores PYTHONDONTWRITEBYTECODE, so the entry module turns
# bytecode caching off itself before it imports them.
entry=$(mktemp -d)
trap 'rm -rf "$entry"' EXIT
printf 'import sys\nsys.dont_write_bytecode = True  # no __pycache__/ in the source tree\nimport %s  # registers the rule\nfrom dac_rule import WitWorld  # noqa: F401\n' "$module" > "$entry/dac_rule_entry.py"

mkdir -p "$(dirname "$out")"
"$tool" -d "$root/wit" -w rule componentize \
    -p "$entry" -p "$kit" -p "$(cd "$(dirname "$rule")" && pwd)" \
    dac_rule_entry -o "$out" >&2
echo "$out"
