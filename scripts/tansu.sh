#!/usr/bin/env bash
# Install and run the Tansu Kafka-compatible broker for integration tests.
#
#   scripts/tansu.sh install          # cargo install tansu into .tools/ (skipped if present)
#   scripts/tansu.sh start PORT [DIR] # start in-memory broker on 127.0.0.1:PORT, prints bootstrap
#   scripts/tansu.sh stop DIR         # stop the broker started with that DIR
#   scripts/tansu.sh bin              # print the path of the tansu binary
#
# Environment:
#   TANSU_START_TIMEOUT  seconds to wait for the port to accept connections (default 30)
set -euo pipefail

TANSU_VERSION="0.6.0"
TANSU_FEATURES="dynostore" # needed for the memory:// (and s3://) storage engine

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TOOLS="$REPO/.tools"
TANSU_BIN="$TOOLS/bin/tansu"

die() { echo "tansu.sh: $*" >&2; exit 1; }
log() { echo "tansu.sh: $*" >&2; }

installed_version() {
  # `tansu --version` prints e.g. "tansu 0.6.0"
  [[ -x "$TANSU_BIN" ]] || return 1
  "$TANSU_BIN" --version 2>/dev/null | awk '{print $NF}'
}

ensure_debian_pkgs() {
  # The build needs a C compiler (cc crate: zstd-sys, lz4-sys, aws-lc-sys, ring) and
  # pkg-config; no -dev package is strictly required for the dynostore feature, but
  # install the usual ones when missing and we are root on Debian.
  local missing=()
  command -v cc >/dev/null 2>&1 || missing+=(gcc)
  command -v pkg-config >/dev/null 2>&1 || missing+=(pkg-config)
  command -v make >/dev/null 2>&1 || missing+=(make)
  if ((${#missing[@]})); then
    if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null 2>&1; then
      log "installing Debian packages: ${missing[*]}"
      apt-get update -qq >&2
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >&2
    else
      log "warning: missing ${missing[*]}; the build may fail (install them with apt-get)"
    fi
  fi
}

cmd_install() {
  local have
  have="$(installed_version || true)"
  if [[ "$have" == "$TANSU_VERSION" ]]; then
    log "tansu $TANSU_VERSION already installed at $TANSU_BIN"
    return 0
  fi
  command -v cargo >/dev/null 2>&1 || die "cargo not found on PATH"
  ensure_debian_pkgs
  mkdir -p "$TOOLS"
  log "installing tansu $TANSU_VERSION (features: $TANSU_FEATURES) into $TOOLS; this takes a while"
  CARGO_TARGET_DIR="$TOOLS/target" cargo install tansu \
    --version "$TANSU_VERSION" --locked --features "$TANSU_FEATURES" \
    --root "$TOOLS" --force >&2
  have="$(installed_version || true)"
  [[ "$have" == "$TANSU_VERSION" ]] || die "install finished but '$TANSU_BIN --version' reports '$have'"
  # The build directory is large and only useful for a rebuild; drop it.
  rm -rf "$TOOLS/target"
  log "installed $TANSU_BIN ($have)"
}

port_open() {
  # bash's /dev/tcp: succeeds when something accepts on 127.0.0.1:$1
  (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

cmd_start() {
  local port="${1:-}" dir="${2:-}"
  [[ "$port" =~ ^[0-9]+$ ]] || die "usage: $0 start PORT [DIR]"
  [[ -x "$TANSU_BIN" ]] || die "$TANSU_BIN not found; run '$0 install' first"
  if [[ -z "$dir" ]]; then
    dir="$(mktemp -d "${TMPDIR:-/tmp}/tansu.XXXXXX")"
  fi
  mkdir -p "$dir"
  dir="$(cd "$dir" && pwd)"
  if port_open "$port"; then
    die "port $port on 127.0.0.1 is already in use"
  fi
  local logf="$dir/tansu.log" pidf="$dir/tansu.pid"
  # Flags are given explicitly so stray STORAGE_ENGINE/LISTENER_URL/... env vars
  # (which tansu also reads) cannot change them.
  (
    cd "$dir"
    exec env RUST_LOG="${RUST_LOG:-warn}" "$TANSU_BIN" broker \
      --cluster-id "tansu_test" \
      --listener-url "tcp://127.0.0.1:$port" \
      --advertised-listener-url "tcp://127.0.0.1:$port" \
      --storage-engine "memory://tansu/" \
      </dev/null >"$logf" 2>&1
  ) &
  local pid=$!
  echo "$pid" >"$pidf"

  local timeout="${TANSU_START_TIMEOUT:-30}" waited=0
  while ! port_open "$port"; do
    if ! kill -0 "$pid" 2>/dev/null; then
      echo "tansu.sh: broker exited before accepting connections; last log lines ($logf):" >&2
      tail -n 30 "$logf" >&2 || true
      rm -f "$pidf"
      exit 1
    fi
    if ((waited >= timeout * 10)); then
      echo "tansu.sh: broker did not accept connections on 127.0.0.1:$port within ${timeout}s; last log lines ($logf):" >&2
      tail -n 30 "$logf" >&2 || true
      kill "$pid" 2>/dev/null || true
      rm -f "$pidf"
      exit 1
    fi
    sleep 0.1
    waited=$((waited + 1))
  done
  log "broker pid $pid, dir $dir"
  echo "127.0.0.1:$port"
}

cmd_stop() {
  local dir="${1:-}"
  [[ -n "$dir" ]] || die "usage: $0 stop DIR"
  local pidf="$dir/tansu.pid"
  [[ -f "$pidf" ]] || die "no pid file $pidf"
  local pid
  pid="$(cat "$pidf")"
  [[ "$pid" =~ ^[0-9]+$ ]] || die "bad pid in $pidf"
  if kill -0 "$pid" 2>/dev/null; then
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 50); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then
      kill -9 "$pid" 2>/dev/null || true
    fi
  fi
  rm -f "$pidf"
}

case "${1:-}" in
  install) shift; cmd_install "$@" ;;
  start) shift; cmd_start "$@" ;;
  stop) shift; cmd_stop "$@" ;;
  bin) echo "$TANSU_BIN" ;;
  *) echo "usage: $0 {install|start PORT [DIR]|stop DIR|bin}" >&2; exit 2 ;;
esac
