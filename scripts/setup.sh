#!/usr/bin/env bash
# System packages the build needs beyond the Rust toolchain and gcc:
# OpenSSL headers and pkg-config for rdkafka's `ssl` feature (TLS, SASL),
# and make for building librdkafka; and for the broker tests, a Java
# runtime (17 or later) and Maven, which scripts/kafka.sh uses to resolve
# and run Apache Kafka; and for the scorecard's browser test, Debian's
# chromium (run headless). Installed with apt-get when missing (as root);
# otherwise says what to install.
set -euo pipefail
missing=()
command -v make >/dev/null 2>&1 || missing+=(make)
command -v pkg-config >/dev/null 2>&1 || missing+=(pkg-config)
if ! pkg-config --exists openssl 2>/dev/null; then missing+=(libssl-dev); fi
command -v java >/dev/null 2>&1 || missing+=(default-jre-headless)
command -v mvn >/dev/null 2>&1 || missing+=(maven)
if ((${#missing[@]})); then
  if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null 2>&1; then
    echo "setup.sh: installing Debian packages: ${missing[*]}" >&2
    apt-get update -qq >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >&2
  else
    echo "setup.sh: please install: ${missing[*]}" >&2
    exit 1
  fi
fi
# Chromium serves one test (the scorecard in a real browser): a failure to
# install it is reported, not fatal; .ci/run then says the test skips.
if ! command -v chromium >/dev/null 2>&1; then
  if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null 2>&1; then
    echo "setup.sh: installing Debian's chromium (the scorecard's browser test)" >&2
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; } >&2 \
      || echo "setup.sh: chromium could not be installed; the browser test will skip" >&2
  else
    echo "setup.sh: install chromium for the scorecard's browser test (it skips without it)" >&2
  fi
fi
