#!/usr/bin/env bash
# The whole test suite: what the README's test command runs, and CI too.
# Needs the Rust toolchain, ../shared beside the repository, and what
# scripts/setup.sh and scripts/tansu.sh install (OpenSSL headers for
# rdkafka's TLS; the Tansu broker, built into .tools/ on first use).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
bash scripts/tansu.sh install

dir=$(mktemp -d)
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
bootstrap=$(bash scripts/tansu.sh start "$port" "$dir")
trap 'bash scripts/tansu.sh stop "$dir" >/dev/null 2>&1 || true; rm -rf "$dir"' EXIT

CUSTODY_TEST_TANSU="$bootstrap" cargo test --locked "$@"
