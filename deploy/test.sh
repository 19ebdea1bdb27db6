#!/usr/bin/env bash
# Tests the chart with the real Helm:
#   lint (default and full values), template (default, full, variants), schema rejections, the generated rules file
#   and dashboards are up to date, the PrometheusRule carries exactly those rules, and the test parent chart
#   (deploy/testdata/controllers-chart, shaped like charts/agents) renders the sidecar through the named templates.
#
#   deploy/test.sh                     offline checks
#   deploy/test.sh --server-dry-run    also `kubectl apply --dry-run=server` of the rendered manifests; needs
#                                      KUBECONFIG. Prometheus Operator CRDs missing on that cluster are created from
#                                      deploy/testdata/crds (accepting any spec) and deleted again afterwards.
# Tools: $HELM (else helm), $KUBECTL (else kubectl), python3 (schema fragment comparison), promtool when present
# ($PROMTOOL, else on PATH) to check the rules rendered with non-default values.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(dirname "$here")
chart="$here/chart"
helm=${HELM:-helm}
kubectl=${KUBECTL:-kubectl}
promtool=${PROMTOOL:-promtool}
server_dry_run=0
for arg in "$@"; do
  case $arg in
    --server-dry-run) server_dry_run=1 ;;
    *) echo "usage: $0 [--server-dry-run]" >&2; exit 2 ;;
  esac
done
command -v "$helm" >/dev/null 2>&1 || { echo "FAIL: helm not found (set HELM)" >&2; exit 1; }

tmp=$(mktemp -d)
created_crds=()
cleanup() {
  if ((${#created_crds[@]})); then
    "$kubectl" delete crd "${created_crds[@]}" --ignore-not-found >/dev/null 2>&1 || true
  fi
  rm -rf "$tmp"
}
trap cleanup EXIT

passed=0
failed=0
ok() { passed=$((passed + 1)); echo "ok: $*"; }
ko() { failed=$((failed + 1)); echo "FAIL: $*"; }
step() { echo; echo "==> $*"; }

# run NAME CMD...: passes when CMD succeeds; its output goes to $tmp/out
run() {
  local name=$1; shift
  if "$@" >"$tmp/out" 2>&1; then ok "$name"; else ko "$name"; sed 's/^/    /' "$tmp/out" | head -40; fi
}
# expect_fail NAME PATTERN CMD...: passes when CMD fails and its output matches PATTERN (grep -E)
expect_fail() {
  local name=$1 pattern=$2; shift 2
  if "$@" >"$tmp/out" 2>&1; then
    ko "$name (succeeded, expected a failure)"
  elif grep -Eq -- "$pattern" "$tmp/out"; then
    ok "$name: $(grep -Eo -- "$pattern" "$tmp/out" | head -1)"
  else
    ko "$name (failed without /$pattern/)"; sed 's/^/    /' "$tmp/out" | head -20
  fi
}
# has FILE PATTERN COUNT: exactly COUNT lines of FILE match PATTERN (grep -E)
count_is() { [[ $(grep -Ec -- "$2" "$1" || true) == "$3" ]]; }

echo "helm: $("$helm" version --short 2>/dev/null || echo '?')"

step "helm lint"
run "helm lint --strict (default values)" "$helm" lint --strict "$chart"
run "helm lint --strict (ci/full-values.yaml)" "$helm" lint --strict "$chart" -f "$here/ci/full-values.yaml"

step "helm template"
run "template with default values" "$helm" template t "$chart"
if [[ -z $(grep -v '^\s*$' "$tmp/out" || true) ]]; then ok "default values render nothing (everything off)"; else ko "default values rendered objects"; fi

"$helm" template t "$chart" -n agents -f "$here/ci/full-values.yaml" >"$tmp/full.yaml"
ok "template with ci/full-values.yaml"
ndash=$(find "$chart/dashboards" -maxdepth 1 -name '*.json' | wc -l)
for kv in ServiceAccount:1 Role:2 RoleBinding:2 Service:1 Deployment:1 PodMonitor:1 PrometheusRule:1 ConfigMap:$ndash; do
  kind=${kv%%:*} n=${kv##*:}
  if count_is "$tmp/full.yaml" "^kind: $kind$" "$n"; then ok "full values: $n $kind"; else ko "full values: expected $n $kind, got $(grep -c "^kind: $kind$" "$tmp/full.yaml" || true)"; fi
done
for want in \
  'image: "ghcr.io/proompteng/agentrun-lifecycle-exporter:0.1.0"' \
  '- "agents,agents-ci"' '- --job-selector' '- "0.0.0.0:9464"' '- "--ttl-grace"' \
  'name: exp-metrics' 'path: /healthz' 'path: /readyz' \
  'runAsNonRoot: true' 'readOnlyRootFilesystem: true' 'allowPrivilegeEscalation: false' '- ALL' 'type: RuntimeDefault' \
  'name: OTEL_EXPORTER_OTLP_ENDPOINT' 'name: OTEL_EXPORTER_OTLP_HEADERS' 'name: OTEL_SERVICE_NAME' \
  'value: "service.instance.id=$(POD_NAME),k8s.pod.name=$(POD_NAME),k8s.namespace.name=$(POD_NAMESPACE),deployment.environment.name=prod,k8s.cluster.name=prod"' \
  'name: AGENTS_AGENT_RUNNER_JOB_TTL_SECONDS' 'value: "86400"' 'value: "604800"' \
  'type: Recreate' 'honorLabels: true' 'grafana_dashboard: "1"' 'namespace: monitoring' \
  'severity: critical' 'team: "platform"' 'absent(agentrun_exporter_build_info{k8s_cluster="prod"})' \
  'sum by (k8s_cluster, namespace) (rate(agentrun_runs_total[5m]))'; do
  if grep -qF -- "$want" "$tmp/full.yaml"; then ok "full values render: $want"; else ko "full values render: missing $want"; fi
done
verbs=$("$helm" template t "$chart" -n agents -f "$here/ci/full-values.yaml" --show-only templates/rbac.yaml |
  awk '/^ *verbs:$/ { v = 1; match($0, /^ */); ind = RLENGTH; next }
       v && match($0, /^ *- /) && RLENGTH == ind + 2 { print $2; next } { v = 0 }' | sort -u | tr '\n' ' ')
if [[ $verbs == "get list watch " ]]; then ok "RBAC verbs: $verbs"; else ko "RBAC verbs are not only get/list/watch: $verbs"; fi
resources=$("$helm" template t "$chart" -n agents -f "$here/ci/full-values.yaml" --show-only templates/rbac.yaml |
  awk '/^ *resources:$/ { r = 1; next } r && /^ *- / { print $2; next } { r = 0 }' | sort -u | tr '\n' ' ')
if [[ $resources == "agentruns jobs pods " ]]; then ok "RBAC resources: $resources"; else ko "RBAC resources are not only agentruns, jobs, pods: $resources"; fi

"$helm" template t "$chart" -n agents --set standalone.enabled=true,rbac.clusterScoped=true >"$tmp/cluster.yaml"
if count_is "$tmp/cluster.yaml" '^kind: ClusterRole$' 1 && count_is "$tmp/cluster.yaml" '^kind: ClusterRoleBinding$' 1 && count_is "$tmp/cluster.yaml" '^kind: Role$' 0; then
  ok "rbac.clusterScoped: one ClusterRole and ClusterRoleBinding, no Role"
else
  ko "rbac.clusterScoped"
fi
"$helm" template t "$chart" -n agents --set rbac.serviceAccountName=agents-sa >"$tmp/sidecar-rbac.yaml"
if grep -q 'name: agents-sa' "$tmp/sidecar-rbac.yaml" && count_is "$tmp/sidecar-rbac.yaml" '^kind: Deployment$' 0; then
  ok "rbac.serviceAccountName binds the parent's ServiceAccount (sidecar mode, no Deployment)"
else
  ko "rbac.serviceAccountName"
fi
"$helm" template t "$chart" -n agents --set service.enabled=true,serviceMonitor.enabled=true >"$tmp/sm.yaml"
if count_is "$tmp/sm.yaml" '^kind: ServiceMonitor$' 1 && grep -q 'app.kubernetes.io/instance: t' "$tmp/sm.yaml"; then
  ok "ServiceMonitor with its Service"
else
  ko "ServiceMonitor"
fi
"$helm" template t "$chart" --set exporter.image.digest=sha256:$(printf '%064d' 0),standalone.enabled=true >"$tmp/digest.yaml"
if grep -q "agentrun-lifecycle-exporter@sha256:0000" "$tmp/digest.yaml"; then ok "image by digest"; else ko "image by digest"; fi
expect_fail "serviceMonitor needs the Service" "needs service.enabled" "$helm" template t "$chart" --set serviceMonitor.enabled=true
expect_fail "podMonitor and serviceMonitor are exclusive" "not both" "$helm" template t "$chart" --set podMonitor.enabled=true,service.enabled=true,serviceMonitor.enabled=true
expect_fail "all namespaces need cluster-scoped RBAC" "needs rbac.clusterScoped" "$helm" template t "$chart" --set standalone.enabled=true --set 'exporter.namespaces={*}'
expect_fail "burn-rate window must be recorded" "must be listed in alerts.slo.windows" "$helm" template t "$chart" --set prometheusRule.enabled=true --set 'alerts.slo.windows={5m,1h}'

step "values.schema.json rejects bad values"
expect_fail "unknown top-level key" "additional properties 'bogusKey' not allowed" "$helm" template t "$chart" --set bogusKey=1
expect_fail "unknown nested key" "additional properties 'bogus' not allowed" "$helm" template t "$chart" --set alerts.thresholds.bogus=1
expect_fail "wrong type (port as string)" "/exporter/metrics/port.*(got string, want integer|Expected: integer)" "$helm" template t "$chart" --set exporter.metrics.port=abc
expect_fail "wrong type (enabled as string)" "/standalone/enabled.*(got string, want boolean|Expected: boolean)" "$helm" template t "$chart" --set-string standalone.enabled=yes
expect_fail "two standalone replicas" "/standalone/replicas" "$helm" template t "$chart" --set standalone.replicas=2
expect_fail "SLO objective out of range" "/alerts/slo/objective" "$helm" template t "$chart" --set alerts.slo.objective=1
expect_fail "port name longer than 15" "/exporter/metrics/portName" "$helm" template t "$chart" --set exporter.metrics.portName=agentrun-exporter-metrics

step "generated files are up to date"
run "alerts/agentrun-lifecycle.rules.yaml and deploy/chart/dashboards/*.json are what the chart's values render (./generate --check)" \
  env HELM="$helm" "$root/generate" --check
"$helm" template t "$chart" --set prometheusRule.enabled=true --show-only templates/prometheusrule.yaml |
  awk 'f { sub(/^  /, ""); print } /^spec:$/ { f = 1 }' >"$tmp/prometheusrule-spec.yaml"
grep -v '^#' "$root/alerts/agentrun-lifecycle.rules.yaml" >"$tmp/rules-file.yaml"
if diff -u "$tmp/rules-file.yaml" "$tmp/prometheusrule-spec.yaml" >"$tmp/out"; then
  ok "PrometheusRule spec is the rules file (default values)"
else
  ko "PrometheusRule spec differs from the rules file"; head -30 "$tmp/out"
fi
if command -v "$promtool" >/dev/null 2>&1; then
  "$helm" template t "$chart" -f "$here/ci/full-values.yaml" --set alerts.emitRulesFile=true \
    --show-only templates/rules-file.yaml >"$tmp/full-rules.yaml"
  run "promtool check rules on the rules rendered with ci/full-values.yaml" "$promtool" check rules "$tmp/full-rules.yaml"
else
  echo "note: promtool not found; rules rendered with non-default values not checked (alerts/test.sh needs it anyway)"
fi

step "parent chart (deploy/testdata/controllers-chart) includes the sidecar"
parent="$tmp/controllers-chart"
cp -r "$here/testdata/controllers-chart" "$parent"
mkdir -p "$parent/charts"
cp -r "$chart" "$parent/charts/agentrun-lifecycle-exporter"
run "helm lint --strict (parent, sidecar enabled)" "$helm" lint --strict "$parent" --set controllers.lifecycleExporter.enabled=true
"$helm" template agents "$parent" -n agents >"$tmp/parent-off.yaml"
if ! grep -q 'agentrun-lifecycle-exporter' "$tmp/parent-off.yaml"; then ok "parent default: no sidecar, no exporter objects"; else ko "parent default rendered exporter parts"; fi
"$helm" template agents "$parent" -n agents --set controllers.lifecycleExporter.enabled=true \
  --set controllers.lifecycleExporter.otel.endpoint=http://otel-collector.observability.svc:4317 \
  --set controllers.lifecycleExporter.resources.limits.memory=512Mi \
  --set controllers.lifecycleExporter.securityContext.readOnlyRootFilesystem=false \
  --set agentrun-lifecycle-exporter.exporter.image.tag=9.9.9 \
  --set agentrun-lifecycle-exporter.podMonitor.enabled=true \
  --set agentrun-lifecycle-exporter.prometheusRule.enabled=true \
  --set agentrun-lifecycle-exporter.dashboards.enabled=true >"$tmp/parent-on.yaml"
awk '/^# Source: agents\/templates\/deployment-controllers.yaml/,/^---/' "$tmp/parent-on.yaml" >"$tmp/controllers.yaml"
if count_is "$tmp/controllers.yaml" '^        - name: ' 2 && grep -q '^        - name: agentrun-lifecycle-exporter$' "$tmp/controllers.yaml"; then
  ok "controllers Deployment: controller container + sidecar"
else
  ko "controllers Deployment containers"; grep -n '^        - name: ' "$tmp/controllers.yaml" || true
fi
for want in '- "agents"' 'value: "600"' 'value: "2592000"' 'agentrun-lifecycle-exporter:9.9.9"' 'memory: 512Mi' \
  'readOnlyRootFilesystem: false' 'cpu: 10m' 'value: "http://otel-collector.observability.svc:4317"' 'name: exp-metrics'; do
  if grep -qF -- "$want" "$tmp/controllers.yaml"; then ok "sidecar: $want"; else ko "sidecar: missing $want"; fi
done
if grep -q '^kind: PodMonitor$' "$tmp/parent-on.yaml" && grep -q '^kind: PrometheusRule$' "$tmp/parent-on.yaml" &&
  count_is "$tmp/parent-on.yaml" '^kind: ConfigMap$' "$ndash" && grep -q 'app.kubernetes.io/instance: agents$' "$tmp/parent-on.yaml"; then
  ok "dependency renders PodMonitor (release selector), PrometheusRule and $ndash dashboard ConfigMaps"
else
  ko "dependency monitoring objects"
fi
"$helm" template agents "$parent" -n agents --set controllers.enabled=false,controllers.lifecycleExporter.enabled=true \
  --set controller.jobTtlSeconds=86400 >"$tmp/parent-cp.yaml"
awk '/^# Source: agents\/templates\/deployment.yaml/,/^---/' "$tmp/parent-cp.yaml" >"$tmp/cp.yaml"
if grep -q '^        - name: agentrun-lifecycle-exporter$' "$tmp/cp.yaml" && grep -q 'value: "86400"' "$tmp/cp.yaml" &&
  ! grep -q 'deployment-controllers' "$tmp/parent-cp.yaml"; then
  ok "controllers.enabled=false: the control-plane Deployment carries the sidecar (controller.jobTtlSeconds wins)"
else
  ko "control-plane Deployment sidecar"
fi
expect_fail "parent schema rejects an unknown key in controllers.lifecycleExporter" "additional properties 'bogus' not allowed" \
  "$helm" template agents "$parent" --set controllers.lifecycleExporter.bogus=1
expect_fail "parent schema rejects a wrong type in controllers.lifecycleExporter" "lifecycleExporter/metrics/port" \
  "$helm" template agents "$parent" --set controllers.lifecycleExporter.metrics.port=abc
expect_fail "dependency schema applies under the parent key" "additional properties 'bogus' not allowed" \
  "$helm" template agents "$parent" --set agentrun-lifecycle-exporter.bogus=1

step "schema fragment for charts/agents matches the chart's exporter schema"
if command -v python3 >/dev/null 2>&1; then
  run "controllers.lifecycleExporter schema (testdata and deploy/agents-chart-integration.md) == exporter schema + enabled" \
    python3 - "$chart/values.schema.json" "$here/testdata/controllers-chart/values.schema.json" "$here/agents-chart-integration.md" <<'PY'
import json, re, sys
chart = json.load(open(sys.argv[1]))
want = dict(chart["properties"]["exporter"]["properties"])
def props(frag, where):
    assert frag.get("additionalProperties") is False, where + ": additionalProperties must be false"
    got = dict(frag["properties"])
    assert got.pop("enabled") == {"type": "boolean"}, where + ": enabled"
    assert got == want, where + ": properties differ from values.schema.json exporter: " + \
        ", ".join(sorted(set(got) ^ set(want)) or [k for k in want if got[k] != want[k]])
parent = json.load(open(sys.argv[2]))
props(parent["properties"]["controllers"]["properties"]["lifecycleExporter"], "testdata schema")
doc = open(sys.argv[3]).read()
m = re.search(r"<!-- schema-fragment -->\s*```json\n(.*?)```", doc, re.S)
assert m, "no <!-- schema-fragment --> json block in the integration doc"
frag = json.loads("{" + m.group(1) + "}")
props(frag["lifecycleExporter"], "integration doc")
print("fragment ok:", len(want) + 1, "properties")
PY
else
  ko "python3 not found: schema fragment not compared"
fi

if ((server_dry_run)); then
  step "server-side dry run (kubectl apply --dry-run=server)"
  if [[ -z ${KUBECONFIG:-} ]]; then
    ko "--server-dry-run needs KUBECONFIG"
  else
    for crd in servicemonitors podmonitors prometheusrules; do
      if ! "$kubectl" get crd "$crd.monitoring.coreos.com" >/dev/null 2>&1; then
        created_crds+=("$crd.monitoring.coreos.com")
      fi
    done
    if ((${#created_crds[@]})); then
      echo "creating minimal CRDs (any spec accepted; removed at exit): ${created_crds[*]}"
      for crd in "${created_crds[@]}"; do
        awk -v n="$crd" 'BEGIN { RS = "---\n" } $0 ~ "name: " n "\n" { printf "---\n%s", $0 }' \
          "$here/testdata/crds/monitoring-coreos-minimal.yaml"
      done | "$kubectl" apply -f - >/dev/null
      "$kubectl" wait --for condition=established --timeout=60s "${created_crds[@]/#/crd/}" >/dev/null
    fi
    # Namespaces that exist on any cluster, so that nothing has to be created for real.
    "$helm" template agentrun-lifecycle-exporter "$chart" -n default -f "$here/ci/full-values.yaml" \
      --set 'exporter.namespaces={default,kube-public}' --set dashboards.namespace=default >"$tmp/dry-standalone.yaml"
    run "standalone (full values): accepted by the API server" "$kubectl" apply --dry-run=server -f "$tmp/dry-standalone.yaml"
    "$helm" template agents "$parent" -n default --set controllers.lifecycleExporter.enabled=true \
      --set 'controller.namespaces={default}' \
      --set agentrun-lifecycle-exporter.podMonitor.enabled=true \
      --set agentrun-lifecycle-exporter.prometheusRule.enabled=true \
      --set agentrun-lifecycle-exporter.dashboards.enabled=true \
      --set agentrun-lifecycle-exporter.rbac.serviceAccountName=agents-sa >"$tmp/dry-parent.yaml"
    run "parent chart with the sidecar: accepted by the API server" "$kubectl" apply --dry-run=server -f "$tmp/dry-parent.yaml"
    "$helm" template agents "$parent" -n default --set controllers.enabled=false,controllers.lifecycleExporter.enabled=true \
      --set 'controller.namespaces={default}' >"$tmp/dry-cp.yaml"
    run "parent chart, sidecar in the control-plane Deployment: accepted by the API server" \
      "$kubectl" apply --dry-run=server -f "$tmp/dry-cp.yaml"
  fi
fi

echo
echo "deploy: $passed passed, $failed failed"
[[ $failed == 0 ]]
