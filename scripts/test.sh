#!/usr/bin/env bash
# The whole test suite: what the README's test command runs, and CI too.
# Needs only the Rust toolchain and ../shared beside the repository.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo test --locked
