#!/usr/bin/env bash
# Builds the funcx C library and examples/c/main.c against it with the system C compiler,
# then runs the program, which exits 0 only when every check in it holds.
#
#   bash examples/c/run.sh              # run it
#   bash examples/c/run.sh --valgrind   # run it under valgrind's memcheck: any memory error,
#                                       # or memory definitely leaked, fails the run
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
target="${CARGO_TARGET_DIR:-$root/target}"
out="$target/c-example"
mkdir -p "$out"

(cd "$root" && cargo build -p funcx-c)
cc="${CC:-cc}"
# Linked against the shared library (-lfuncx_c), found at run time through the rpath.
# (Static linking works too: "$target/debug/libfuncx_c.a" -lpthread -ldl -lm.)
"$cc" -std=c11 -Wall -Wextra -Werror -g \
    -I "$root/crates/funcx-c/include" \
    "$root/examples/c/main.c" \
    -L "$target/debug" -lfuncx_c -Wl,-rpath,"$target/debug" -lpthread \
    -o "$out/funcx-example"

if [ "${1:-}" = "--valgrind" ]; then
    # Only the C program and the library run under valgrind; the Python workers it starts
    # are not traced. Runtime threads still parked at exit are "possibly lost", not errors.
    exec valgrind --quiet --error-exitcode=99 --leak-check=full \
        --errors-for-leak-kinds=definite --show-leak-kinds=definite \
        "$out/funcx-example"
fi
exec "$out/funcx-example"
