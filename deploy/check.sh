#!/usr/bin/env bash
# Checks the deployment files against the tools that will consume them, and
# custody's live /metrics against Prometheus's linter:
#
#   1. promtool check rules  deploy/prometheus/rules.yml, and its unit tests
#      (promtool test rules deploy/prometheus/rules.test.yml)
#   2. promtool check config deploy/prometheus/prometheus.yml (from a copy
#      whose rule path points at the repository's rules.yml instead of the
#      container's /etc/prometheus/rules.yml)
#   3. deploy/kubernetes/prometheusrule.yaml is rules.yml, wrapped
#   4. custody accepts the example configurations (custody.toml, owners.toml)
#   5. the dashboard is JSON; the kustomization builds (when kubectl or
#      kustomize is installed)
#   6. live: `custody demo --serve` on a free port, `promtool check metrics`
#      on its /metrics must print nothing, /healthz answers, /api/teams is JSON
#
# promtool comes from Debian's `prometheus` package, installed with apt-get
# when missing (as root). The custody binary is $CUSTODY_BIN, else
# target/debug/custody (built with `cargo build` when missing).
#
#   bash deploy/check.sh                  # check everything
#   bash deploy/check.sh --regenerate     # rewrite prometheusrule.yaml from rules.yml
#
# Exit status: 0 when every check passed, 1 otherwise (the failing check is
# named on standard error).
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"

rules=deploy/prometheus/rules.yml
prom_config=deploy/prometheus/prometheus.yml
prom_rule=deploy/kubernetes/prometheusrule.yaml
tmp=$(mktemp -d)
demo_pid=

fail() {
  echo "check.sh: FAILED: $*" >&2
  exit 1
}
step() { echo "== $*"; }

cleanup() {
  if [[ -n $demo_pid ]] && kill -0 "$demo_pid" 2>/dev/null; then
    kill -INT "$demo_pid" 2>/dev/null || true
    for _ in $(seq 1 40); do
      kill -0 "$demo_pid" 2>/dev/null || break
      sleep 0.5
    done
    kill -KILL "$demo_pid" 2>/dev/null || true
    wait "$demo_pid" 2>/dev/null || true
  fi
  rm -rf "$tmp"
}
trap cleanup EXIT

# rules.yml as a prometheus-operator PrometheusRule: the same text indented
# under `spec:` (block scalars keep their relative indentation).
prometheus_rule() {
  cat <<'EOF'
# GENERATED from deploy/prometheus/rules.yml by `bash deploy/check.sh
# --regenerate`; edit rules.yml, not this file (check.sh fails when they
# differ). The `release` label is what kube-prometheus-stack selects rules
# by; adjust it to your Prometheus's ruleSelector.
apiVersion: monitoring.coreos.com/v1
kind: PrometheusRule
metadata:
  name: custody
  labels:
    app.kubernetes.io/name: custody
    release: kube-prometheus-stack
spec:
EOF
  sed -e 's/^\(.\)/  \1/' "$rules"
}

if [[ ${1:-} == --regenerate ]]; then
  prometheus_rule >"$prom_rule"
  echo "wrote $prom_rule"
  exit 0
fi

# --- promtool ---------------------------------------------------------------
step "promtool"
if ! command -v promtool >/dev/null 2>&1; then
  if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null 2>&1; then
    echo "promtool missing: installing Debian's prometheus package" >&2
    apt-get update -qq >&2 || fail "apt-get update"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >&2 \
      || fail "apt-get install prometheus"
  else
    fail "promtool not found; install Debian's prometheus package (apt-get install prometheus) or put promtool on PATH"
  fi
fi
command -v promtool >/dev/null 2>&1 || fail "promtool still not found after installing prometheus (expected /usr/bin/promtool)"
promtool --version 2>&1 | head -n1

# --- rules and config -------------------------------------------------------
step "promtool check rules $rules"
promtool check rules "$rules" || fail "promtool check rules $rules"

step "promtool test rules deploy/prometheus/rules.test.yml"
promtool test rules deploy/prometheus/rules.test.yml || fail "promtool test rules deploy/prometheus/rules.test.yml"

step "promtool check config $prom_config (rule_files rewritten to the repository's copy)"
grep -q '/etc/prometheus/rules.yml' "$prom_config" \
  || fail "$prom_config no longer names /etc/prometheus/rules.yml; update check.sh"
sed -e "s#/etc/prometheus/rules.yml#$root/$rules#" "$prom_config" >"$tmp/prometheus.yml"
promtool check config "$tmp/prometheus.yml" || fail "promtool check config $prom_config"

step "$prom_rule matches $rules"
prometheus_rule >"$tmp/prometheusrule.yaml"
diff -u "$prom_rule" "$tmp/prometheusrule.yaml" \
  || fail "$prom_rule is stale: run bash deploy/check.sh --regenerate"
echo "ok"

# --- the custody binary -----------------------------------------------------
bin=${CUSTODY_BIN:-${CARGO_TARGET_DIR:-target}/debug/custody}
if [[ ! -x $bin ]]; then
  if [[ -n ${CUSTODY_BIN:-} ]]; then
    fail "CUSTODY_BIN=$CUSTODY_BIN is not an executable"
  fi
  step "building $bin (cargo build)"
  cargo build --locked || fail "cargo build"
fi

step "custody accepts the example configurations"
fixture=tests/fixtures/bandit/bandit-paramiko-4.0.0.sarif
"$bin" owners check --owners deploy/kubernetes/config/owners.toml \
  || fail "custody owners check --owners deploy/kubernetes/config/owners.toml"
"$bin" process --config deploy/kubernetes/config/custody.toml \
  --owners deploy/kubernetes/config/owners.toml \
  --target repo:github.com/acme/payments-api "$fixture" >/dev/null 2>"$tmp/process.err" \
  || { cat "$tmp/process.err" >&2; fail "custody rejects deploy/kubernetes/config/custody.toml"; }
"$bin" process --config deploy/compose/custody.toml \
  --owners tests/fixtures/ownership/owners.toml \
  --target repo:github.com/paramiko/paramiko "$fixture" >/dev/null 2>"$tmp/process.err" \
  || { cat "$tmp/process.err" >&2; fail "custody rejects deploy/compose/custody.toml"; }
echo "ok"

# --- dashboard and manifests ------------------------------------------------
step "dashboard JSON"
python3 -m json.tool deploy/grafana/custody-dashboard.json >/dev/null \
  || fail "deploy/grafana/custody-dashboard.json is not valid JSON"
echo "ok"

step "kustomize build deploy/kubernetes"
if command -v kustomize >/dev/null 2>&1; then
  kustomize build deploy/kubernetes >"$tmp/k8s.yaml" || fail "kustomize build deploy/kubernetes"
  echo "ok ($(grep -c '^kind:' "$tmp/k8s.yaml") objects)"
elif command -v kubectl >/dev/null 2>&1; then
  kubectl kustomize deploy/kubernetes >"$tmp/k8s.yaml" || fail "kubectl kustomize deploy/kubernetes"
  echo "ok ($(grep -c '^kind:' "$tmp/k8s.yaml") objects)"
else
  echo "skipped: neither kustomize nor kubectl installed"
fi

# --- live scrape ------------------------------------------------------------
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()')
base=http://127.0.0.1:$port
step "live: $bin demo --serve --listen 127.0.0.1:$port"
"$bin" demo --serve --listen "127.0.0.1:$port" >"$tmp/demo.out" 2>"$tmp/demo.err" &
demo_pid=$!
deadline=$((SECONDS + 120))
until curl -sf -o /dev/null "$base/metrics"; do
  if ! kill -0 "$demo_pid" 2>/dev/null; then
    cat "$tmp/demo.err" >&2
    fail "custody demo exited before serving /metrics"
  fi
  if ((SECONDS >= deadline)); then
    cat "$tmp/demo.err" >&2
    fail "no answer on $base/metrics within 120 s"
  fi
  sleep 1
done
echo "serving after $((SECONDS - deadline + 120)) s"

# custody_consumer_lag appears with the consumer's first statistics
# (every 5 s): give it up to 30 s so that it is linted too.
step "promtool check metrics < $base/metrics"
lag_deadline=$((SECONDS + 30))
while :; do
  curl -sf "$base/metrics" >"$tmp/metrics.txt" || fail "GET $base/metrics"
  if grep -q '^# TYPE custody_consumer_lag ' "$tmp/metrics.txt" || ((SECONDS >= lag_deadline)); then
    break
  fi
  sleep 2
done
families=$(grep -c '^# TYPE ' "$tmp/metrics.txt" || true)
lint_status=0
promtool check metrics <"$tmp/metrics.txt" >"$tmp/lint.txt" 2>&1 || lint_status=$?
if [[ -s $tmp/lint.txt || $lint_status -ne 0 ]]; then
  cat "$tmp/lint.txt" >&2
  fail "promtool check metrics (exit $lint_status) complained about custody's /metrics"
fi
echo "ok ($families metric families, no lint findings)"
# Families with no series are not exposed at all, so the demo cannot show
# (nor promtool lint) those that nothing in the demo sets.
declared=$(grep -o '"custody_[a-z0-9_]*"' src/metrics/mod.rs | tr -d '"' | sort -u)
absent=$(for name in $declared; do
  grep -q "^# TYPE $name " "$tmp/metrics.txt" || printf '%s ' "$name"
done)
if [[ -n $absent ]]; then
  echo "note: declared in src/metrics/mod.rs but without series in the demo (not linted): $absent"
fi

step "GET /healthz, /readyz, /api/teams"
curl -sf -o /dev/null "$base/healthz" || fail "GET $base/healthz did not answer 200"
ready=$(curl -s -o /dev/null -w '%{http_code}' "$base/readyz")
[[ $ready == 200 || $ready == 503 ]] || fail "GET $base/readyz answered $ready (expected 200 or 503)"
curl -sf "$base/api/teams" >"$tmp/teams.json" || fail "GET $base/api/teams"
python3 -m json.tool "$tmp/teams.json" >/dev/null || fail "$base/api/teams is not JSON"
echo "ok (/readyz $ready, /api/teams: $(python3 -c 'import json,sys; print(len(json.load(open(sys.argv[1]))["teams"]), "teams")' "$tmp/teams.json"))"

echo "check.sh: all checks passed"
