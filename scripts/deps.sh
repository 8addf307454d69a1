#!/usr/bin/env bash
# Installs the Debian packages Strata needs, only those that are missing.
# Usage: scripts/deps.sh [build|bench|tidy|clang|fuzz|docs]
#   build: compile and test; bench: also the peers and gnuplot (bench/run_report.sh's charts);
#   tidy: also clang-tidy; clang (or fuzz): also clang with its sanitizer runtimes and
#   libFuzzer; docs: also doxygen and graphviz
set -euo pipefail

packages=(g++ cmake ninja-build catch2 libbenchmark-dev python3 libssl-dev openssl node-llhttp curl
  pkg-config)
case "${1:-build}" in
  build) ;;
  bench) packages+=(python3-uvloop libasio-dev libuv1-dev liburing-dev strace valgrind nginx wrk gnuplot-nox) ;;
  tidy) packages+=(clang-tidy) ;;
  clang | fuzz) packages+=(clang libclang-rt-14-dev) ;;
  docs) packages+=(doxygen graphviz) ;;
  *) echo "usage: scripts/deps.sh [build|bench|tidy|clang|fuzz|docs]" >&2; exit 2 ;;
esac

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0

echo "Installing missing Debian packages: ${missing[*]}" >&2
sudo=""
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null || { echo "error: need root (or sudo) to install: ${missing[*]}" >&2; exit 1; }
  sudo="sudo"
fi
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
$sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
