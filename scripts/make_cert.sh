#!/usr/bin/env bash
# Makes a throwaway self-signed certificate and private key for localhost, to try the TLS
# examples: EC P-256, subjectAltName DNS:localhost and IP:127.0.0.1, valid for 30 days. Clients
# trust it by taking the certificate itself as their CA (echo_client --cafile DIR/cert.pem).
# Not for production.
#
# Usage: scripts/make_cert.sh [DIR]   (default build/certs, below the repository)
# Writes DIR/cert.pem and DIR/key.pem (replacing them) and prints their two paths.
# Installs the openssl command with scripts/deps.sh when it is missing.
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
dir="${1:-$root/build/certs}"

command -v openssl >/dev/null || "$root/scripts/deps.sh" build

mkdir -p "$dir"
cert="$dir/cert.pem"
key="$dir/key.pem"
log="$(mktemp)"
trap 'rm -f "$log"' EXIT

umask 077  # the key is readable by its owner only
if ! openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 30 \
    -subj "/CN=localhost" -addext "subjectAltName=DNS:localhost,IP:127.0.0.1" \
    -keyout "$key" -out "$cert" 2>"$log"; then
  echo "error: openssl could not make the certificate:" >&2
  cat "$log" >&2
  exit 1
fi
chmod 644 "$cert"

echo "$cert"
echo "$key"
