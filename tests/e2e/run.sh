#!/usr/bin/env bash
# The end-to-end suite: builds what is missing of the test bed, starts it (Prometheus loads the alert rules),
# runs the scenarios against the real control plane, then checks with the same bed that every dashboard panel
# returns data and that the chart's manifests pass a server-side dry run. Always stops what it started.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$root"
bed=tests/e2e/testbed
# shellcheck source=testbed/lib.sh
source "$bed/lib.sh"

# The real node (kubelet, containerd; needs root) is on unless TESTBED_REAL_NODE=0: scenario 12 installs the chart
# there. With TESTBED_REAL_NODE=0 that scenario is skipped, and says so.
export TESTBED_REAL_NODE=${TESTBED_REAL_NODE:-1}
"$bed/build.sh"
cargo build --quiet
# The stand-in controller program scenario 10 runs as two replicas.
cargo build --quiet --example standin-controller
if [[ $TESTBED_REAL_NODE == 1 ]]; then
  # The images the chart runs there: the exporter's, and the stand-in controller's.
  exporter_image=$(deploy/image/build.sh | tail -n1)
  standin_image=$(tests/e2e/standin-image.sh | tail -n1)
fi
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
skip=()
if [[ $TESTBED_REAL_NODE == 1 ]]; then
  image_ref() { tar -xOf "$1" index.json | jq -r '.manifests[0].annotations["io.containerd.image.name"]'; }
  for archive in "$exporter_image" "$standin_image"; do
    ctr --address "$REAL_NODE_CONTAINERD_ADDRESS" --namespace k8s.io images import "$archive" >/dev/null
  done
  E2E_EXPORTER_IMAGE=$(image_ref "$exporter_image")
  E2E_STANDIN_IMAGE=$(image_ref "$standin_image")
  HELM=${HELM:-$(testbed_bin helm)}
  export E2E_EXPORTER_IMAGE E2E_STANDIN_IMAGE HELM
else
  echo "e2e: SKIPPED: scenario 12 (the chart on the real node), because TESTBED_REAL_NODE=0" >&2
  skip=(--skip s12_)
fi
echo "e2e: scenarios"
# --show-output: the scenarios print their timings (failover, readiness, memory).
cargo test --test e2e -- --ignored --test-threads=1 --show-output "${skip[@]}" || status=1

echo "e2e: every dashboard panel returns data from the test bed's Prometheus"
dashboards/test.sh --prometheus "$PROMETHEUS_URL" --lookback 15m --step 1 --rate-interval 10s || status=1

echo "e2e: the chart's manifests pass a server-side dry run"
deploy/test.sh --server-dry-run || status=1

if [[ $TESTBED_REAL_NODE == 1 ]]; then
  echo "e2e: the exporter's image as a Pod on the real node"
  NODE_SMOKE_IMAGE=$exporter_image tests/e2e/testbed/node-smoke.sh "$state" || status=1
fi

exit "$status"
