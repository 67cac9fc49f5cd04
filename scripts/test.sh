#!/usr/bin/env bash
# The whole test suite: what the README's test command runs, and CI too.
# Needs the Rust toolchain and what scripts/setup.sh installs (OpenSSL
# headers for rdkafka's TLS; Java 17 and Maven for Apache Kafka). Apache
# Kafka itself is resolved from Maven Central into .tools/ on first use
# (scripts/kafka.sh, a few seconds) and started as a separate process for
# the broker tests, which read its address from CUSTODY_TEST_KAFKA.
# Tests that read the shared corpus (../shared) skip without it.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
bash scripts/kafka.sh install

dir=$(mktemp -d)
trap 'bash scripts/kafka.sh stop "$dir" >/dev/null 2>&1 || true; rm -rf "$dir"' EXIT
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
bootstrap=$(bash scripts/kafka.sh start "$port" "$dir")

CUSTODY_TEST_KAFKA="$bootstrap" cargo test --locked "$@"
