#!/usr/bin/env bash
# Builds a C dac rule into a component:
#   rule-sdk/c/build.sh path/to/rule.c [-o rule.wasm]
#
# Toolchain (installs nothing; says what is missing):
#   clang-19 + lld-19 (wasm-ld)    Debian: apt-get install clang-19 lld-19
#   wasi-libc, compiler-rt         Debian: apt-get install wasi-libc libclang-rt-19-dev-wasm32
#   wit-bindgen 0.61.1             cargo install wit-bindgen-cli --version 0.61.1 --locked
#   wasm-component-ld              shipped with rustup's toolchain (rust-toolchain.toml)
#
# The bindings are generated from wit/ at every build into
# target/c-bindings/ (`wit-bindgen c wit --world rule`, dac:rule@0.2.0), so
# they cannot drift from the WIT. clang compiles the rule with the kit's
# glue (src/dac_rule.c: the batch `evaluate` export, calling the rule's
# per-event `dac_evaluate`) for wasm32-wasi and links it with
# wasm-component-ld, which runs wasm-ld and wraps the module into a
# component (the WASI preview-1 calls of wasi-libc are adapted to 0.2).
set -euo pipefail

WIT_BINDGEN_VERSION=0.61.1
kit=$(cd "$(dirname "$0")" && pwd)
. "$kit/../rule-args.sh"
parse_rule_args .c "$@"

CC=${CC:-clang-19}
WASM_LD=${WASM_LD:-/usr/lib/llvm-19/bin/wasm-ld}
WIT_BINDGEN=${WIT_BINDGEN:-wit-bindgen}
missing=()
command -v "$CC" >/dev/null 2>&1 || missing+=("$CC (apt-get install clang-19)")
[ -x "$WASM_LD" ] || missing+=("$WASM_LD (apt-get install lld-19)")
[ -f /usr/lib/wasm32-wasi/libc.a ] || missing+=("wasi-libc in /usr/lib/wasm32-wasi (apt-get install wasi-libc)")
[ -f /usr/lib/llvm-19/lib/clang/19/lib/wasi/libclang_rt.builtins-wasm32.a ] \
    || missing+=("compiler-rt for wasm32 (apt-get install libclang-rt-19-dev-wasm32)")
if ! command -v "$WIT_BINDGEN" >/dev/null 2>&1; then
    missing+=("wit-bindgen $WIT_BINDGEN_VERSION (cargo install wit-bindgen-cli --version $WIT_BINDGEN_VERSION --locked)")
elif [ "$("$WIT_BINDGEN" --version | awk '{print $2}')" != "$WIT_BINDGEN_VERSION" ]; then
    missing+=("wit-bindgen $WIT_BINDGEN_VERSION, found $("$WIT_BINDGEN" --version) (cargo install wit-bindgen-cli --version $WIT_BINDGEN_VERSION --locked --force)")
fi
component_ld="$(cd "$root" && rustc --print sysroot 2>/dev/null)/lib/rustlib/$(cd "$root" && rustc -vV 2>/dev/null | sed -n 's/^host: //p')/bin/wasm-component-ld"
[ -x "$component_ld" ] || missing+=("wasm-component-ld (comes with rustup's toolchain: rustup toolchain install in $root)")
if [ ${#missing[@]} -gt 0 ]; then
    echo "$0: cannot build C rules, missing:" >&2
    printf '  - %s\n' "${missing[@]}" >&2
    exit 3
fi

gen="$root/target/c-bindings"
mkdir -p "$gen" "$(dirname "$out")"
"$WIT_BINDGEN" c "$root/wit" --world rule --out-dir "$gen" >/dev/null 2>&1 \
    || "$WIT_BINDGEN" c "$root/wit" --world rule --out-dir "$gen" >/dev/null  # again, to show its error

"$CC" --target=wasm32-wasi -mexec-model=reactor -O2 -std=c11 -Wall -Wextra -Werror \
    -I"$gen" -I"$kit/include" \
    -fuse-ld="$component_ld" -Wl,--wasi-adapter=reactor \
    -Wl,-z,stack-size=65536 -Wl,--strip-all \
    -o "$out" "$rule" "$kit/src/dac_rule.c" "$gen/rule.c" "$gen/rule_component_type.o"
echo "$out"
