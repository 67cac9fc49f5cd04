#!/usr/bin/env bash
# Install and run a real Apache Kafka broker (single node, KRaft) for integration tests.
#
#   scripts/kafka.sh install           # resolve the jars from Maven Central into .tools/ (skipped if present)
#   scripts/kafka.sh start PORT [DIR]  # start a broker+controller on 127.0.0.1:PORT, prints the bootstrap
#   scripts/kafka.sh stop DIR          # stop the broker started with that DIR
#   scripts/kafka.sh bin               # print the install directory (its libs/ holds the jars)
#   scripts/kafka.sh run CLASS [ARG..] # run a Kafka tool from the install, e.g.
#                                      #   run org.apache.kafka.tools.TopicCommand --bootstrap-server B --list
#
# The version is pinned in scripts/kafka/pom.xml (property kafka.version); `install` copies that pom's
# runtime dependencies into .tools/kafka-VERSION/libs with `mvn dependency:copy-dependencies`.
# `start` keeps everything in DIR: server.properties, log4j2.properties, data/ (the log dirs and the
# metadata log), kafka.log (the broker's log) and kafka.pid. Starting again on a DIR whose broker was
# stopped keeps its topics and data.
#
# Environment:
#   JAVA, JAVA_HOME         the java to run (JAVA wins, then $JAVA_HOME/bin/java, then java on PATH); 17+
#   KAFKA_START_TIMEOUT     seconds to wait for the broker to be ready (default 90)
#   KAFKA_STOP_TIMEOUT      seconds to wait after SIGTERM before SIGKILL (default 15)
#   KAFKA_LOG_LEVEL         log4j2 level of the broker's log (default WARN)
#   KAFKA_PROFILE           the JVM's tuning: `test` (default) starts fast and stays small (256-512 MiB
#                           heap, serial GC, the quick JIT tier only); `server` runs it as Kafka's own
#                           start scripts do (1 GiB heap, G1 with a 20 ms pause goal, the full JIT),
#                           for figures a production broker would give (the benches' Apache Kafka rows)
#   KAFKA_HEAP_OPTS         heap flags (default: the profile's)
#   KAFKA_JVM_OPTS          more JVM flags, added after the defaults
#   KAFKA_CONTROLLER_PORT   port of the controller listener (default: a free one picked at start)
#   KAFKA_EXTRA_CONFIG      extra server properties, key=value separated by newlines or spaces; they
#                           come last in server.properties and so override the defaults below
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TOOLS="$REPO/.tools"
KAFKA_POM="$REPO/scripts/kafka/pom.xml"

die() { echo "kafka.sh: $*" >&2; exit 1; }
log() { echo "kafka.sh: $*" >&2; }

[[ -f "$KAFKA_POM" ]] || die "missing $KAFKA_POM"
KAFKA_VERSION="$(sed -n 's:.*<kafka\.version>\([^<]*\)</kafka\.version>.*:\1:p' "$KAFKA_POM" | head -n 1)"
[[ -n "$KAFKA_VERSION" ]] || die "no <kafka.version> in $KAFKA_POM"
KAFKA_HOME="$TOOLS/kafka-$KAFKA_VERSION"
KAFKA_LIBS="$KAFKA_HOME/libs"
# Holds the sha256 of the pom the install was made from: a changed pom means a new install.
MARKER="$KAFKA_HOME/.installed"

# The line KafkaRaftServer logs (at INFO) once the broker is unfenced and its listeners accept.
STARTED_MSG="Kafka Server started"

pom_digest() { sha256sum "$KAFKA_POM" | awk '{print $1}'; }

is_installed() { [[ -f "$MARKER" && "$(cat "$MARKER")" == "$(pom_digest)" ]]; }

java_bin() {
  if [[ -n "${JAVA:-}" ]]; then
    echo "$JAVA"
  elif [[ -n "${JAVA_HOME:-}" && -x "$JAVA_HOME/bin/java" ]]; then
    echo "$JAVA_HOME/bin/java"
  else
    command -v java || die "no java found (set JAVA or JAVA_HOME)"
  fi
}

# The feature version of a java binary: 'openjdk version "17.0.15" ...' -> 17, '"1.8.0_402"' -> 8.
java_major() {
  local v
  v="$("$1" -version 2>&1 | sed -n 's/.* version "\([^"]*\)".*/\1/p' | head -n 1)"
  [[ -n "$v" ]] || return 1
  if [[ "$v" == 1.* ]]; then v="${v#1.}"; fi
  echo "${v%%[.+-]*}"
}

checked_java() {
  local java major
  java="$(java_bin)"
  major="$(java_major "$java" || true)"
  [[ "$major" =~ ^[0-9]+$ ]] || die "cannot tell the version of $java"
  ((major >= 17)) || die "Kafka $KAFKA_VERSION needs Java 17 or later; $java is $major (set JAVA or JAVA_HOME)"
  echo "$java"
}

require_installed() {
  is_installed || die "Kafka $KAFKA_VERSION is not installed in $KAFKA_HOME; run '$0 install' first"
}

cmd_install() {
  if is_installed; then
    log "Kafka $KAFKA_VERSION already installed at $KAFKA_HOME"
    return 0
  fi
  command -v mvn >/dev/null 2>&1 || die "mvn not found on PATH (Debian: apt-get install maven)"
  mkdir -p "$TOOLS"
  local stage="$KAFKA_HOME.partial"
  rm -rf "$stage"
  mkdir -p "$stage"
  log "resolving Kafka $KAFKA_VERSION from Maven Central into $KAFKA_HOME"
  # Batch mode and quiet: only errors are printed (to stderr). Debian's Maven 3.8 prints bare
  # colour-reset codes even so; sed drops them.
  if ! mvn -B -q -f "$KAFKA_POM" \
      dependency:copy-dependencies \
      -DincludeScope=runtime \
      -DoutputDirectory="$stage/libs" 2>&1 |
      sed -e 's/\x1b\[[0-9;]*m//g' -e '/^[[:space:]]*$/d' >&2; then
    rm -rf "$stage"
    die "mvn could not resolve the dependencies of $KAFKA_POM"
  fi
  [[ -f "$stage/libs/kafka_2.13-$KAFKA_VERSION.jar" ]] || {
    rm -rf "$stage"
    die "the resolved jars lack kafka_2.13-$KAFKA_VERSION.jar"
  }
  rm -rf "$KAFKA_HOME"
  mv "$stage" "$KAFKA_HOME"
  pom_digest >"$MARKER"
  log "installed Kafka $KAFKA_VERSION: $(find "$KAFKA_LIBS" -name '*.jar' | wc -l) jars in $KAFKA_LIBS"
}

port_open() {
  # bash's /dev/tcp: succeeds when something accepts on 127.0.0.1:$1
  (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

# A port nothing listens on, below Linux's default ephemeral range (32768-60999) so that it does not
# clash with ports the kernel hands out to sockets bound to port 0.
free_port() {
  local avoid="$1" p
  for _ in $(seq 200); do
    p=$((20000 + RANDOM % 12000))
    [[ "$p" != "$avoid" ]] || continue
    if ! port_open "$p"; then
      echo "$p"
      return 0
    fi
  done
  return 1
}

# Whether $1 is the pid of a broker that this script started (guards against a reused pid).
is_broker_pid() {
  local cmd
  cmd="$(tr '\0' ' ' <"/proc/$1/cmdline" 2>/dev/null)" || return 1
  [[ "$cmd" == *" kafka.Kafka "* ]]
}

# Whether pid $1 still runs. A zombie does not: the broker's parent was this script's shell, so
# once it exits whatever reaps orphans here may be slow, or may never do it.
alive() {
  kill -0 "$1" 2>/dev/null || return 1
  local state
  state="$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null)" || return 1
  [[ "$state" != Z ]]
}

write_config() {
  local dir="$1" port="$2" cport="$3"
  cat >"$dir/server.properties" <<EOF
# Written by scripts/kafka.sh start; rewritten on every start.
# One node that is both the broker and the (only) KRaft controller.
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:$cport
controller.listener.names=CONTROLLER
listeners=PLAINTEXT://127.0.0.1:$port,CONTROLLER://127.0.0.1:$cport
advertised.listeners=PLAINTEXT://127.0.0.1:$port
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
log.dirs=$dir/data

# A single node: every replication factor and min ISR is 1.
default.replication.factor=1
min.insync.replicas=1
offsets.topic.replication.factor=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
# The internal topics are made on first use (first group, first transactional producer); one
# partition each makes that quick.
offsets.topic.num.partitions=1
transaction.state.log.num.partitions=1
num.partitions=1

# Topics must be created before use, as in production: a missing topic is an error, not made on
# the fly.
auto.create.topics.enable=false

# Groups start at once instead of waiting for more members.
group.initial.rebalance.delay.ms=0

# Compaction that tests can see within seconds, once a topic sets segment.ms,
# min.cleanable.dirty.ratio and delete.retention.ms small: the cleaner looks for work every
# second instead of every 15 s, and the retention and flush tasks start after 1 s, not 30 s.
log.cleaner.enable=true
log.cleaner.backoff.ms=1000
log.cleaner.threads=1
log.cleaner.dedupe.buffer.size=33554432
log.initial.task.delay.ms=1000
log.retention.check.interval.ms=5000

# Records of up to 16 MiB plus batch and header overhead (custody sends up to 16 MiB).
message.max.bytes=17825792
replica.fetch.max.bytes=17825792
replica.fetch.response.max.bytes=17825792
EOF
  if [[ -n "${KAFKA_EXTRA_CONFIG:-}" ]]; then
    {
      echo
      echo "# From KAFKA_EXTRA_CONFIG"
      local kv
      for kv in $KAFKA_EXTRA_CONFIG; do
        echo "$kv"
      done
    } >>"$dir/server.properties"
  fi

  cat >"$dir/log4j2.properties" <<EOF
# Written by scripts/kafka.sh start. The broker's log goes to stdout, which start sends to kafka.log.
status = warn
# Kafka's own shutdown hook logs its shutdown; log4j's hook is not needed and only warns when a
# logger is first made while the JVM is going down.
shutdownHook = disable
appender.out.type = Console
appender.out.name = out
appender.out.target = SYSTEM_OUT
appender.out.layout.type = PatternLayout
appender.out.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = ${KAFKA_LOG_LEVEL:-WARN}
rootLogger.appenderRef.out.ref = out
# kafka.sh start waits for this logger's "$STARTED_MSG" line.
logger.started.name = kafka.server.KafkaRaftServer
logger.started.level = INFO
EOF
}

# Sends SIGTERM, waits up to $2 seconds, then SIGKILL.
terminate() {
  local pid="$1" secs="$2"
  alive "$pid" || return 0
  kill "$pid" 2>/dev/null || true
  local i
  for ((i = 0; i < secs * 10; i++)); do
    alive "$pid" || return 0
    sleep 0.1
  done
  log "pid $pid still running ${secs}s after SIGTERM; sending SIGKILL"
  kill -9 "$pid" 2>/dev/null || true
  for ((i = 0; i < 50; i++)); do
    alive "$pid" || return 0
    sleep 0.1
  done
}

cmd_start() {
  local port="${1:-}" dir="${2:-}"
  [[ "$port" =~ ^[0-9]+$ ]] || die "usage: $0 start PORT [DIR]"
  require_installed
  local java
  java="$(checked_java)"
  if [[ -z "$dir" ]]; then
    dir="$(mktemp -d "${TMPDIR:-/tmp}/kafka.XXXXXX")"
  fi
  mkdir -p "$dir"
  dir="$(cd "$dir" && pwd)"
  local logf="$dir/kafka.log" pidf="$dir/kafka.pid"
  if [[ -f "$pidf" ]]; then
    local old
    old="$(cat "$pidf")"
    if [[ "$old" =~ ^[0-9]+$ ]] && is_broker_pid "$old"; then
      die "a broker (pid $old) is already running in $dir"
    fi
    rm -f "$pidf"
  fi
  if port_open "$port"; then
    die "port $port on 127.0.0.1 is already in use"
  fi
  local cport="${KAFKA_CONTROLLER_PORT:-}"
  if [[ -z "$cport" ]]; then
    cport="$(free_port "$port")" || die "found no free port for the controller listener"
  fi
  [[ "$cport" =~ ^[0-9]+$ && "$cport" != "$port" ]] || die "bad controller port '$cport'"

  write_config "$dir" "$port" "$cport"

  local heap=() tuning=() extra=()
  case "${KAFKA_PROFILE:-test}" in
    test)
      heap=(-Xms256m -Xmx512m)
      tuning=(-XX:+UseSerialGC -XX:TieredStopAtLevel=1)
      ;;
    server)
      # What Kafka's kafka-server-start.sh and kafka-run-class.sh give a broker by default.
      heap=(-Xms1g -Xmx1g)
      tuning=(-XX:+UseG1GC -XX:MaxGCPauseMillis=20 -XX:InitiatingHeapOccupancyPercent=35
              -XX:+ExplicitGCInvokesConcurrent)
      ;;
    *) die "KAFKA_PROFILE is '${KAFKA_PROFILE}'; it is test or server" ;;
  esac
  if [[ -n "${KAFKA_HEAP_OPTS:-}" ]]; then read -r -a heap <<<"$KAFKA_HEAP_OPTS"; fi
  if [[ -n "${KAFKA_JVM_OPTS:-}" ]]; then read -r -a extra <<<"$KAFKA_JVM_OPTS"; fi
  local jvm=(
    "${heap[@]}"
    "${tuning[@]}" -XX:-UsePerfData -XX:+ExitOnOutOfMemoryError
    -Djava.awt.headless=true
    "-Dlog4j2.configurationFile=$dir/log4j2.properties"
    "${extra[@]}"
  )

  # A new DIR is formatted once: a cluster id (16 random bytes, base64url without padding, the form
  # Kafka's Uuid takes) and the metadata log's bootstrap records. A DIR used before keeps its data.
  if [[ ! -f "$dir/data/meta.properties" ]]; then
    local cluster_id=-
    # An id that starts with '-' would be taken for an option (Kafka's own random ids avoid it too).
    while [[ "$cluster_id" == -* ]]; do
      cluster_id="$(head -c 16 /dev/urandom | base64 | tr '+/' '-_' | tr -d '=\n')"
    done
    if ! "$java" "${jvm[@]}" -cp "$KAFKA_LIBS/*" kafka.tools.StorageTool format \
        --config "$dir/server.properties" --cluster-id "$cluster_id" \
        </dev/null >"$dir/format.log" 2>&1; then
      cat "$dir/format.log" >&2
      die "formatting the storage in $dir/data failed"
    fi
  fi

  # The log is appended to across restarts of the same DIR; only what this start adds counts.
  local log_from=1
  if [[ -f "$logf" ]]; then log_from=$(($(stat -c %s "$logf") + 1)); fi
  (
    cd "$dir"
    exec "$java" "${jvm[@]}" -cp "$KAFKA_LIBS/*" kafka.Kafka "$dir/server.properties" \
      </dev/null >>"$logf" 2>&1
  ) &
  local pid=$!
  echo "$pid" >"$pidf"

  local timeout="${KAFKA_START_TIMEOUT:-90}" ticks=0
  # grep -c, not -q: it reads all its input, so tail never gets SIGPIPE (which pipefail would count).
  until tail -c "+$log_from" "$logf" | grep -c -F "$STARTED_MSG" >/dev/null && port_open "$port"; do
    if ! alive "$pid"; then
      echo "kafka.sh: broker exited before it was ready; last log lines ($logf):" >&2
      tail -n 40 "$logf" >&2 || true
      rm -f "$pidf"
      exit 1
    fi
    if ((ticks >= timeout * 10)); then
      echo "kafka.sh: broker not ready on 127.0.0.1:$port within ${timeout}s; last log lines ($logf):" >&2
      tail -n 40 "$logf" >&2 || true
      terminate "$pid" 5
      rm -f "$pidf"
      exit 1
    fi
    sleep 0.1
    ticks=$((ticks + 1))
  done
  log "Kafka $KAFKA_VERSION broker pid $pid, controller port $cport, dir $dir"
  echo "127.0.0.1:$port"
}

cmd_stop() {
  local dir="${1:-}"
  [[ -n "$dir" ]] || die "usage: $0 stop DIR"
  local pidf="$dir/kafka.pid"
  [[ -f "$pidf" ]] || die "no pid file $pidf"
  local pid
  pid="$(cat "$pidf")"
  [[ "$pid" =~ ^[0-9]+$ ]] || die "bad pid in $pidf"
  if is_broker_pid "$pid"; then
    terminate "$pid" "${KAFKA_STOP_TIMEOUT:-15}"
  fi
  rm -f "$pidf"
}

cmd_run() {
  local class="${1:-}"
  [[ -n "$class" ]] || die "usage: $0 run CLASS [ARG...]"
  shift
  require_installed
  local java
  java="$(checked_java)"
  exec "$java" -XX:TieredStopAtLevel=1 -XX:-UsePerfData -cp "$KAFKA_LIBS/*" "$class" "$@"
}

case "${1:-}" in
  install) shift; cmd_install "$@" ;;
  start) shift; cmd_start "$@" ;;
  stop) shift; cmd_stop "$@" ;;
  run) shift; cmd_run "$@" ;;
  bin | home) echo "$KAFKA_HOME" ;;
  version) echo "$KAFKA_VERSION" ;;
  *) echo "usage: $0 {install|start PORT [DIR]|stop DIR|run CLASS [ARG...]|bin|home|version}" >&2; exit 2 ;;
esac
