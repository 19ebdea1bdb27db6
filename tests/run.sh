#!/usr/bin/env bash
# The whole test suite, as CI runs it:
#   format and lint, unit and integration tests, the generated rules and dashboards are up to date (./generate
#   --check), alert rule tests (promtool), dashboard checks, chart tests (Helm), the container image (built into
#   target/image/ and checked), and the end-to-end scenarios on a real Kubernetes control plane with Jaeger and
#   Prometheus.
# The first run builds the end-to-end test bed from the Go module proxy (about 30 minutes on 2 cores; later
# runs reuse ~/.cache/agentrun-lifecycle-exporter). Every suite runs even if an earlier one failed; the last
# line says how many passed and failed, and the exit code is non-zero if any failed.
set -uo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"

passed=0
failed=0
failures=()
digests=()
logs=$(mktemp -d)
trap 'rm -rf "$logs"' EXIT
suite() {
  local name=$1
  shift
  echo
  echo "=== $name"
  local started=$SECONDS
  if "$@" 2>&1 | tee "$logs/$((passed + failed))"; then
    passed=$((passed + 1))
    echo "=== $name: ok ($((SECONDS - started)) s)"
  else
    failed=$((failed + 1))
    failures+=("$name")
    digests+=("$logs/$((passed + failed - 1))")
    echo "=== $name: FAILED ($((SECONDS - started)) s)"
  fi
}

tests/e2e/testbed/deps.sh || exit 1

suite "format" cargo fmt --check
suite "clippy" cargo clippy --all-targets --quiet -- -D warnings
suite "unit and integration tests" cargo test --quiet
suite "test bed build" tests/e2e/testbed/build.sh
# Helm and promtool for the chart and alert suites: the test bed's builds.
# shellcheck disable=SC1091
source tests/e2e/testbed/lib.sh
HELM=$(testbed_bin helm 2>/dev/null || command -v helm || true)
PROMTOOL=$(command -v promtool || true)
export HELM PROMTOOL
suite "generated files (./generate --check)" ./generate --check
suite "alert rules (promtool)" alerts/test.sh
suite "dashboards (static)" dashboards/test.sh
suite "chart (helm)" deploy/test.sh
suite "image" deploy/image/test.sh
suite "end to end" tests/e2e/run.sh

# The reasons again at the end, where a truncated log still shows them: each failed test's panic message.
echo
if ((failed)); then
  for i in "${!failures[@]}"; do
    echo "--- why \"${failures[$i]}\" failed:"
    grep -a -A6 -E "panicked at|^error(\[|:)|^FAIL|^failed:|^not ok" "${digests[$i]}" | cut -c1-400 | head -40
  done
  echo "failed suites: ${failures[*]}"
fi
echo "suites: $passed passed, $failed failed"
((failed == 0))
