#!/usr/bin/env bash
# Builds the Doxygen API reference from the public headers into build/docs/docs/html.
# Every Doxygen warning is an error (an undocumented public name, a bad @param): the script
# exits non-zero and the warnings are on stderr.
#
# Usage: scripts/docs.sh
# Installs doxygen and graphviz first (scripts/deps.sh docs). Configures build/docs (or
# STRATA_DOCS_BUILD) with only the library and the docs target; nothing is compiled.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/deps.sh docs
build="${STRATA_DOCS_BUILD:-build/docs}"
generator=()
if [ ! -f "$build/CMakeCache.txt" ] && command -v ninja >/dev/null; then
  generator=(-G Ninja)
fi
cmake -S . -B "$build" "${generator[@]}" -DSTRATA_BUILD_DOCS=ON -DSTRATA_BUILD_TESTS=OFF \
  -DSTRATA_BUILD_EXAMPLES=OFF -DSTRATA_BUILD_BENCH=OFF >/dev/null
cmake --build "$build" --target docs
echo "docs: $build/docs/html/index.html" >&2
