# Sourced by the language kits' build.sh: the command line they share,
#   build.sh RULE.EXT [-o OUT.wasm]
# `parse_rule_args EXT "$@"` sets `rule`, `out` (default
# target/lang-rules/NAME.wasm) and `root` (the repository), or prints the
# usage and exits 2.
parse_rule_args() {
    local ext=$1; shift
    root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
    local usage="usage: $0 RULE$ext [-o OUT.wasm]"
    [ $# -ge 1 ] || { echo "$usage" >&2; exit 2; }
    rule=$1; shift
    out=""
    while [ $# -gt 0 ]; do
        case $1 in
            -o) [ $# -ge 2 ] || { echo "$usage" >&2; exit 2; }; out=$2; shift 2 ;;
            *) echo "$usage" >&2; exit 2 ;;
        esac
    done
    [ -f "$rule" ] || { echo "$0: $rule: no such file" >&2; exit 2; }
    [ -n "$out" ] || out="$root/target/lang-rules/$(basename "$rule" "$ext").wasm"
}
