#!/usr/bin/env bash
# Runs the side-by-side benchmark (tests/bench/README.md) from the repository root: raises the
# open-file limit for 10 000 connections, builds the orchestrator and the bare server, and runs it.
# Flags are passed on: -quick, -rounds N, -out FILE, -only chorus,node, -phases echo …
# CHORUS_BIN picks the chorus binary (default ./chorus, from make build).
set -euo pipefail
cd "$(dirname "$0")/../.."

ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
go build -o "$tmp/bench" ./tests/bench
go build -o "$tmp/bare" ./tests/bench/bare
"$tmp/bench" -chorus "${CHORUS_BIN:-./chorus}" -bare "$tmp/bare" "$@"
