#!/usr/bin/env bash
# The end-to-end suite: builds what is missing of the test bed, starts it (Prometheus loads the alert rules),
# runs the scenarios against the real control plane, then checks with the same bed that every dashboard panel
# returns data and that the chart's manifests pass a server-side dry run. Always stops what it started.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$root"
bed=tests/e2e/testbed

"$bed/build.sh"
cargo build --quiet
# The stand-in controller program scenario 10 runs as two replicas.
cargo build --quiet --example standin-controller
export EXPORTER_BIN=$root/target/debug/agentrun-lifecycle-exporter
state=$(mktemp -d "${TMPDIR:-/tmp}/agentrun-e2e.XXXXXX")
cleanup() {
  TESTBED_STATE_DIR=$state tests/e2e/exporter.sh stop || true
  "$bed/down.sh" "$state" || echo "e2e: down.sh failed; see $state/logs" >&2
}
trap cleanup EXIT

PROMETHEUS_RULE_FILES="$root/alerts/agentrun-lifecycle.rules.yaml" "$bed/up.sh" "$state"
# shellcheck disable=SC1091
source "$state/env"
"$KUBECTL" apply -f tests/e2e/agentrun-crd.yaml
"$KUBECTL" wait --for condition=established --timeout=60s crd/agentruns.agents.proompteng.ai
tests/e2e/exporter.sh start grpc

status=0
echo "e2e: scenarios"
cargo test --test e2e -- --ignored --test-threads=1 || status=1

echo "e2e: every dashboard panel returns data from the test bed's Prometheus"
dashboards/test.sh --prometheus "$PROMETHEUS_URL" --lookback 15m --step 1 --rate-interval 10s || status=1

echo "e2e: the chart's manifests pass a server-side dry run"
deploy/test.sh --server-dry-run || status=1

exit "$status"
