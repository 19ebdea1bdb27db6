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
for kv in ServiceAccount:1 Role:3 RoleBinding:3 Service:1 Deployment:1 PodMonitor:1 PrometheusRule:1 ConfigMap:$ndash; do
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
  'name: AGENTS_CONTROLLER_AGENTRUN_RETENTION_ZERO_TTL_MAX_SECONDS' 'value: "3600"' \
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
if count_is "$tmp/cluster.yaml" '^kind: ClusterRole$' 1 && count_is "$tmp/cluster.yaml" '^kind: ClusterRoleBinding$' 1 && count_is "$tmp/cluster.yaml" '^kind: Role$' 1; then
  ok "rbac.clusterScoped: one ClusterRole and ClusterRoleBinding, one Role (the leader Lease)"
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

step "parent chart (deploy/testdata/controllers-chart, shaped like charts/agents) includes the sidecar"
parent="$tmp/controllers-chart"
cp -r "$here/testdata/controllers-chart" "$parent"
if grep -qx '\*\.tgz' "$parent/.helmignore"; then ok "test chart's .helmignore skips *.tgz, as charts/agents' does"; else ko "test chart's .helmignore lacks *.tgz"; fi
# The trap the guide avoids: `helm dependency update` writes charts/<name>-<version>.tgz, which that .helmignore hides.
cp -r "$here/testdata/controllers-chart" "$tmp/depupdate"
printf '    repository: file://%s\n' "$chart" >>"$tmp/depupdate/Chart.yaml"
if "$helm" dependency update "$tmp/depupdate" >"$tmp/out" 2>&1 && ls "$tmp/depupdate/charts/"*.tgz >/dev/null 2>&1; then
  expect_fail "helm dependency update's archive is hidden by .helmignore (why the guide vendors the directory)" \
    "missing in charts/ directory: agentrun-lifecycle-exporter" "$helm" template agents "$tmp/depupdate"
else
  ko "helm dependency update (file://) failed"; sed 's/^/    /' "$tmp/out" | head -10
fi
# The guide's default path, literally: vendor the chart directory.
mkdir -p "$parent/charts"
cp -r "$chart" "$parent/charts/agentrun-lifecycle-exporter"
# The include lines of the guide are the ones this chart uses.
grep -F 'include "agentrun-lifecycle-exporter.container"' "$here/agents-chart-integration.md" | sed 's/^ *//' | sort -u >"$tmp/guide-includes"
grep -hF 'include "agentrun-lifecycle-exporter.container"' "$parent"/templates/*.yaml | sed 's/^ *//' | sort -u >"$tmp/chart-includes"
if [[ -s $tmp/guide-includes ]] && diff "$tmp/guide-includes" "$tmp/chart-includes" >"$tmp/out"; then
  ok "the guide's include lines are the test chart's ($(wc -l <"$tmp/guide-includes"))"
else
  ko "the guide's include lines differ from the test chart's"; sed 's/^/    /' "$tmp/out"
fi
run "helm lint --strict (parent, sidecar in the controllers Deployment)" "$helm" lint --strict "$parent" --set controllers.enabled=true,controllers.lifecycleExporter.enabled=true
run "helm lint --strict (parent, sidecar in the control-plane Deployment)" "$helm" lint --strict "$parent" --set controllers.lifecycleExporter.enabled=true
"$helm" template agents "$parent" -n agents >"$tmp/parent-off.yaml"
if ! grep -q 'agentrun-lifecycle-exporter' "$tmp/parent-off.yaml"; then ok "parent default: no sidecar, no exporter objects"; else ko "parent default rendered exporter parts"; fi

# compare.py MANIFEST: in every Deployment, the sidecar is there exactly when the container before it runs the AgentRun
# controller (AGENTS_CONTROLLER_ENABLED), and sees what that container sees: the Job TTL, the retention settings and
# the namespaces, present or absent alike, a literal read as the controller reads it (Number.parseInt), a valueFrom
# as is. Prints, per Deployment, what the sidecar got.
cat >"$tmp/compare.py" <<'PY'
import re, sys, yaml
MIRRORED = ["AGENTS_AGENT_RUNNER_JOB_TTL_SECONDS", "AGENTS_CONTROLLER_AGENTRUN_RETENTION_SECONDS",
            "AGENTS_CONTROLLER_AGENTRUN_RETENTION_ZERO_TTL_MAX_SECONDS"]
SIDECAR = "agentrun-lifecycle-exporter"
def parse_int(v):  # JavaScript Number.parseInt(v, 10)
    m = re.match(r"\s*([+-]?\d+)", "" if v is None else str(v))
    return int(m.group(1)) if m else None
def last(env):
    out = {}
    for e in env or []:
        out[e["name"]] = e
    return out
errors, seen = [], []
for doc in yaml.safe_load_all(open(sys.argv[1])):
    if not doc or doc.get("kind") != "Deployment":
        continue
    name = doc["metadata"]["name"]
    ctrs = doc["spec"]["template"]["spec"]["containers"]
    side = [c for c in ctrs if c["name"] == SIDECAR]
    ctrl = last([c for c in ctrs if c["name"] != SIDECAR][0].get("env"))
    en = ctrl.get("AGENTS_CONTROLLER_ENABLED", {}).get("value")
    runs = str(en).strip().lower() in ("1", "true")
    if runs != bool(side):
        errors.append(f"{name}: AgentRun controller {'on' if runs else 'off'} (AGENTS_CONTROLLER_ENABLED={en}) but {len(side)} sidecar(s)")
        continue
    if not side:
        seen.append(f"{name}: no sidecar (AGENTS_CONTROLLER_ENABLED={en})")
        continue
    s = side[0]
    senv = last(s.get("env"))
    got = []
    for n in MIRRORED:
        c, x = ctrl.get(n), senv.get(n)
        if (c is None) != (x is None):
            errors.append(f"{name}: {n}: controller {'has' if c else 'lacks'} it, sidecar {'has' if x else 'lacks'} it")
        elif c is not None and "valueFrom" in c:
            if c.get("valueFrom") != x.get("valueFrom"):
                errors.append(f"{name}: {n}: valueFrom {c.get('valueFrom')} != {x.get('valueFrom')}")
            got.append(f"{n}=<valueFrom>")
        elif c is not None:
            if parse_int(c.get("value")) != parse_int(x.get("value")):
                errors.append(f"{name}: {n}: controller {c.get('value')!r} (reads {parse_int(c.get('value'))}) != sidecar {x.get('value')!r}")
            got.append(f"{n}={x.get('value')}")
        else:
            got.append(f"{n}=<unset>")
    args = s.get("args", [])
    sns = args[args.index("--namespaces") + 1] if "--namespaces" in args else None
    cns = ctrl.get("AGENTS_CONTROLLER_NAMESPACES", {}).get("value")
    if sns != cns:
        errors.append(f"{name}: sidecar watches {sns!r}, controller {cns!r}")
    short = {"AGENTS_AGENT_RUNNER_JOB_TTL_SECONDS": "ttl", "AGENTS_CONTROLLER_AGENTRUN_RETENTION_SECONDS": "retention",
             "AGENTS_CONTROLLER_AGENTRUN_RETENTION_ZERO_TTL_MAX_SECONDS": "zeroTtlRetention"}
    seen.append(" ".join(g.replace(k, v) for g in got for k, v in short.items() if g.startswith(k)) + f" namespaces={sns}")
print("; ".join(x for x in seen if "no sidecar" not in x))
for e in errors:
    print("MISMATCH", e)
sys.exit(1 if errors or not seen else 0)
PY
# same_as_controller NAME HELM-ARGS...: renders the parent with the sidecar on, in both places, and compares.
same_as_controller() {
  local name=$1; shift
  local where
  for where in controllers control-plane; do
    local flag=true; [[ $where == control-plane ]] && flag=false
    if ! "$helm" template agents "$parent" -n agents --set controllers.lifecycleExporter.enabled=true \
      --set controllers.enabled=$flag "$@" >"$tmp/cmp.yaml" 2>"$tmp/out"; then
      ko "sidecar sees the controller's values ($where, $name): render failed"; sed 's/^/    /' "$tmp/out" | head -5; continue
    fi
    if python3 "$tmp/compare.py" "$tmp/cmp.yaml" >"$tmp/out" 2>&1; then
      ok "sidecar sees the controller's values ($where, $name): $(head -1 "$tmp/out")"
    else
      ko "sidecar sees the controller's values ($where, $name)"; sed 's/^/    /' "$tmp/out" | head -10
    fi
  done
}
printf 'controller:\n  jobTtlSeconds: 86400\n  jobTtlSecondsAfterFinished: 86400\n  agentRunRetentionSeconds: 604800\n' >"$tmp/ttl-file.yaml"
same_as_controller "chart defaults"
same_as_controller "jobTtlSeconds 0" --set controller.jobTtlSeconds=0
same_as_controller "jobTtlSecondsAfterFinished 0" --set controller.jobTtlSecondsAfterFinished=0
same_as_controller "jobTtlSeconds null" --set controller.jobTtlSeconds=null
same_as_controller "jobTtlSecondsAfterFinished null" --set controller.jobTtlSecondsAfterFinished=null
same_as_controller "both TTLs null" --set controller.jobTtlSeconds=null,controller.jobTtlSecondsAfterFinished=null
same_as_controller "jobTtlSeconds 86400, jobTtlSecondsAfterFinished 3600" --set controller.jobTtlSeconds=86400,controller.jobTtlSecondsAfterFinished=3600
same_as_controller "TTLs and retention from a values file" -f "$tmp/ttl-file.yaml"
same_as_controller "retention 0" --set controller.agentRunRetentionSeconds=0
same_as_controller "retention null" --set controller.agentRunRetentionSeconds=null
same_as_controller "retention 604800, zero-TTL retention 3600" --set controller.agentRunRetentionSeconds=604800,controller.agentRunRetentionZeroTtlMaxSeconds=3600
same_as_controller "TTL from env.vars (chart TTLs null)" --set controller.jobTtlSeconds=null,controller.jobTtlSecondsAfterFinished=null \
  --set-string env.vars.AGENTS_AGENT_RUNNER_JOB_TTL_SECONDS=1234
same_as_controller "env.extra overrides the chart's TTL" --set 'env.extra[0].name=AGENTS_AGENT_RUNNER_JOB_TTL_SECONDS' --set-string 'env.extra[0].value=4321'
same_as_controller "TTL from a Secret (env.secrets)" --set 'env.secrets[0].name=AGENTS_AGENT_RUNNER_JOB_TTL_SECONDS,env.secrets[0].secretName=agents-ttl'
same_as_controller "controller.namespaces" --set 'controller.namespaces={agents,agents-ci}'
same_as_controller "namespaceOverride" --set namespaceOverride=prod,agentrun-lifecycle-exporter.namespaceOverride=prod
# The comparison catches the mistake it is for: the previous guide's include, which passed
# `controller.jobTtlSeconds | default controller.jobTtlSecondsAfterFinished` (0 → 600) and the raw retention.
cp -r "$parent" "$tmp/mutant"
sed -i 's|^\( *\){{- include "agentrun-lifecycle-exporter.container".*|\1{{- include "agentrun-lifecycle-exporter.container" (dict "root" $ "values" $.Values.controllers.lifecycleExporter "namespaces" $.Values.controller.namespaces "jobTtlSeconds" ($.Values.controller.jobTtlSeconds \| default $.Values.controller.jobTtlSecondsAfterFinished) "agentRunRetentionSeconds" $.Values.controller.agentRunRetentionSeconds) \| nindent 8 }}|' \
  "$tmp/mutant/templates/deployment.yaml"
"$helm" template agents "$tmp/mutant" -n agents --set controllers.lifecycleExporter.enabled=true --set controller.jobTtlSeconds=0 >"$tmp/mutant.yaml"
if ! python3 "$tmp/compare.py" "$tmp/mutant.yaml" >"$tmp/out" 2>&1 && grep -q 'MISMATCH.*AGENTS_AGENT_RUNNER_JOB_TTL_SECONDS' "$tmp/out"; then
  ok "the comparison rejects the previous guide's include (jobTtlSeconds 0: $(grep -o "controller '0'[^!]*!= sidecar '[0-9]*'" "$tmp/out" | head -1))"
else
  ko "the comparison accepts the previous guide's include"; sed 's/^/    /' "$tmp/out" | head -5
fi
# Absolute values, so that the comparison cannot pass vacuously.
sidecar_env() { # WHERE NAME ARGS...: the sidecar's value of NAME, or <unset>
  local where=$1 var=$2; shift 2
  "$helm" template agents "$parent" -n agents --set controllers.lifecycleExporter.enabled=true "$@" --show-only "templates/$where" |
    python3 -c 'import sys, yaml
d = yaml.safe_load(sys.stdin); s = [c for c in d["spec"]["template"]["spec"]["containers"] if c["name"] == "agentrun-lifecycle-exporter"][0]
print({e["name"]: e.get("value") for e in s.get("env", [])}.get(sys.argv[1], "<unset>"))' "$var"
}
for c in "deployment.yaml|AGENTS_AGENT_RUNNER_JOB_TTL_SECONDS|0|--set controller.jobTtlSeconds=0" \
  "deployment.yaml|AGENTS_AGENT_RUNNER_JOB_TTL_SECONDS|3600|--set controller.jobTtlSeconds=null,controller.jobTtlSecondsAfterFinished=3600" \
  "deployment.yaml|AGENTS_AGENT_RUNNER_JOB_TTL_SECONDS|<unset>|--set controller.jobTtlSeconds=null,controller.jobTtlSecondsAfterFinished=null" \
  "deployment-controllers.yaml|AGENTS_AGENT_RUNNER_JOB_TTL_SECONDS|600|--set controllers.enabled=true,controller.jobTtlSeconds=0" \
  "deployment-controllers.yaml|AGENTS_AGENT_RUNNER_JOB_TTL_SECONDS|0|--set controllers.enabled=true,controller.jobTtlSecondsAfterFinished=0" \
  "deployment-controllers.yaml|AGENTS_AGENT_RUNNER_JOB_TTL_SECONDS|<unset>|--set controllers.enabled=true,controller.jobTtlSecondsAfterFinished=null" \
  "deployment.yaml|AGENTS_CONTROLLER_AGENTRUN_RETENTION_SECONDS|2592000|--set controller.agentRunRetentionSeconds=0" \
  "deployment.yaml|AGENTS_CONTROLLER_AGENTRUN_RETENTION_SECONDS|2592000|--set controller.agentRunRetentionSeconds=null" \
  "deployment.yaml|AGENTS_CONTROLLER_AGENTRUN_RETENTION_SECONDS|2|" \
  "deployment-controllers.yaml|AGENTS_CONTROLLER_AGENTRUN_RETENTION_ZERO_TTL_MAX_SECONDS|0|--set controllers.enabled=true"; do
  IFS='|' read -r where var want args <<<"$c"
  # shellcheck disable=SC2086
  got=$(sidecar_env "$where" "$var" $args 2>&1 || true)
  if [[ $got == "$want" ]]; then ok "$where ${args:-(defaults)}: sidecar $var=$want"; else ko "$where ${args:-(defaults)}: sidecar $var=$got, want $want"; fi
done
# (2592000 in values.yaml is a float to Helm: `| quote` renders "2.592e+06", which the controller's parseInt reads as 2.)

for c in "controller.enabled=false" "controller.enabled=false,controllers.enabled=true"; do
  "$helm" template agents "$parent" -n agents --set controllers.lifecycleExporter.enabled=true --set "$c" >"$tmp/off.yaml"
  if ! grep -q 'name: agentrun-lifecycle-exporter$' "$tmp/off.yaml"; then ok "$c: no sidecar (the AgentRun controller runs nowhere)"; else ko "$c: sidecar rendered"; fi
done
"$helm" template agents "$parent" -n agents --set controllers.enabled=true,controllers.lifecycleExporter.enabled=true >"$tmp/both.yaml"
if [[ $(grep -c '^        - name: agentrun-lifecycle-exporter$' "$tmp/both.yaml") == 1 ]] &&
  awk '/^# Source: agents\/templates\/deployment-controllers.yaml/,/^---/' "$tmp/both.yaml" | grep -q '^        - name: agentrun-lifecycle-exporter$'; then
  ok "controllers.enabled=true: one sidecar, in the controllers Deployment (the control plane's controller is off)"
else
  ko "controllers.enabled=true: sidecar count/placement"
fi

digest=sha256:$(printf '%064d' 7)
expect_fail "imagePolicy.requireDigest: the sidecar's image needs a digest too" \
  "requireDigest=true requires controllers.lifecycleExporter.image.digest" \
  "$helm" template agents "$parent" --set controllers.lifecycleExporter.enabled=true,imagePolicy.requireDigest=true,image.digest=$digest
"$helm" template agents "$parent" --set controllers.lifecycleExporter.enabled=true,imagePolicy.requireDigest=true,image.digest=$digest \
  --set controllers.lifecycleExporter.image.digest=$digest >"$tmp/digest-parent.yaml"
if grep -q "image: \"ghcr.io/proompteng/agentrun-lifecycle-exporter@$digest\"" "$tmp/digest-parent.yaml"; then ok "imagePolicy.requireDigest with the sidecar's digest: image by digest"; else ko "requireDigest with digest"; fi
expect_fail "the test chart's own digest validation (as upstream's)" "requires image.digest or controlPlane.image.digest" \
  "$helm" template agents "$parent" --set imagePolicy.requireDigest=true

expect_fail "namespaceOverride without the dependency's namespaceOverride (monitoring objects on)" \
  "set agentrun-lifecycle-exporter.namespaceOverride: prod" \
  "$helm" template agents "$parent" -n agents --set controllers.lifecycleExporter.enabled=true,namespaceOverride=prod,agentrun-lifecycle-exporter.podMonitor.enabled=true
"$helm" template agents "$parent" -n agents --set controllers.enabled=true,controllers.lifecycleExporter.enabled=true,namespaceOverride=prod \
  --set agentrun-lifecycle-exporter.namespaceOverride=prod,agentrun-lifecycle-exporter.podMonitor.enabled=true \
  --set agentrun-lifecycle-exporter.prometheusRule.enabled=true,agentrun-lifecycle-exporter.dashboards.enabled=true \
  --set agentrun-lifecycle-exporter.rbac.serviceAccountName=agents-sa >"$tmp/nso.yaml"
nso=$(python3 -c 'import sys, yaml
bad = []
for d in yaml.safe_load_all(open(sys.argv[1])):
    if not d: continue
    ns = d["metadata"].get("namespace")
    if d["kind"] in ("ClusterRole", "ClusterRoleBinding"): continue
    if ns != "prod": bad.append(d["kind"] + "/" + d["metadata"]["name"] + "=" + str(ns))
    for s in d.get("subjects", []):
        if s.get("namespace") != "prod": bad.append("subject of " + d["metadata"]["name"])
    sel = d.get("spec", {}).get("namespaceSelector", {}).get("matchNames")
    if sel is not None and sel != ["prod"]: bad.append("namespaceSelector of " + d["kind"])
print(" ".join(bad))' "$tmp/nso.yaml")
if [[ -z $nso ]] && grep -q '^kind: PodMonitor$' "$tmp/nso.yaml"; then ok "namespaceOverride: every object, RoleBinding subject and PodMonitor selector in prod"; else ko "namespaceOverride: outside prod: $nso"; fi
expect_fail "rbac.serviceAccountName Roles must cover the namespaces the sidecar watches" \
  "binds Roles only in agents: set agentrun-lifecycle-exporter.exporter.namespaces to \\[agents, agents-ci\\]" \
  "$helm" template agents "$parent" -n agents --set controllers.lifecycleExporter.enabled=true --set 'controller.namespaces={agents,agents-ci}' \
  --set agentrun-lifecycle-exporter.rbac.serviceAccountName=agents-sa
"$helm" template agents "$parent" -n agents --set controllers.lifecycleExporter.enabled=true --set 'controller.namespaces={agents,agents-ci}' \
  --set agentrun-lifecycle-exporter.rbac.serviceAccountName=agents-sa --set 'agentrun-lifecycle-exporter.exporter.namespaces={agents,agents-ci}' >"$tmp/rbac-ns.yaml"
if count_is "$tmp/rbac-ns.yaml" '^kind: RoleBinding$' 3 && grep -qF -- '- "agents,agents-ci"' "$tmp/rbac-ns.yaml"; then
  ok "rbac.serviceAccountName with exporter.namespaces: a RoleBinding per watched namespace, one for the leader Lease"
else
  ko "rbac.serviceAccountName with exporter.namespaces"
fi
# The sidecar follows the controller's Lease: it reads that one Lease and gets the controller's election settings.
lease_rule=$(python3 - "$tmp/rbac-ns.yaml" <<'PY'
import sys, yaml
for d in yaml.safe_load_all(open(sys.argv[1])):
    if d and d["kind"] == "Role" and d["metadata"]["name"].endswith("-leader-lease"):
        print(d["metadata"]["namespace"], yaml.safe_dump(d["rules"], default_flow_style=True, width=1000).strip())
PY
)
if [[ $lease_rule == "agents [{apiGroups: [coordination.k8s.io], resourceNames: [agents-controller-leader], resources: [leases], verbs: [get, list, watch]}]" ]]; then
  ok "the leader Lease: get/list/watch on that one name in the Deployment's namespace"
else
  ko "the leader Lease rule: $lease_rule"
fi
sidecar_env=$(python3 - "$tmp/rbac-ns.yaml" <<'PY'
import sys, yaml
for d in yaml.safe_load_all(open(sys.argv[1])):
    if d and d["kind"] == "Deployment":
        for c in d["spec"]["template"]["spec"]["containers"]:
            if c["name"] == "agentrun-lifecycle-exporter":
                env = {e["name"]: e.get("value", e.get("valueFrom")) for e in c.get("env", [])}
                print(env.get("AGENTS_LEADER_ELECTION_ENABLED"), env.get("AGENTS_LEADER_ELECTION_LEASE_NAME"),
                      env.get("AGENTS_LEADER_ELECTION_LEASE_NAMESPACE"), env.get("AGENTS_POD_UID"))
PY
)
if [[ $sidecar_env == "true agents-controller-leader agents {'fieldRef': {'fieldPath': 'metadata.uid'}}" ]]; then
  ok "the sidecar gets the controller's leader election and pod uid"
else
  ko "the sidecar's leader election env: $sidecar_env"
fi
expect_fail "a controller Lease the sidecar's Role does not grant" \
  "the controller elects its leader on Lease agents/other, but agentrun-lifecycle-exporter.rbac.leaderLease grants reading agents/agents-controller-leader" \
  "$helm" template agents "$parent" -n agents --set controllers.lifecycleExporter.enabled=true \
  --set agentrun-lifecycle-exporter.rbac.serviceAccountName=agents-sa --set controller.leaderElection.leaseName=other
expect_fail "the sidecar's TTL cannot be set apart from the controller's" "the sidecar copies the controller container's own variable" \
  "$helm" template agents "$parent" --set controllers.lifecycleExporter.enabled=true,controllers.lifecycleExporter.jobTtlSecondsAfterFinished=86400
expect_fail "nor through extraEnv" "extraEnv sets AGENTS_CONTROLLER_AGENTRUN_RETENTION_SECONDS" \
  "$helm" template agents "$parent" --set controllers.lifecycleExporter.enabled=true \
  --set 'controllers.lifecycleExporter.extraEnv[0].name=AGENTS_CONTROLLER_AGENTRUN_RETENTION_SECONDS,controllers.lifecycleExporter.extraEnv[0].value=1'
expect_fail "a PodMonitor on another port name than the sidecar's" "scrape port" \
  "$helm" template agents "$parent" --set controllers.lifecycleExporter.enabled=true,controllers.lifecycleExporter.metrics.portName=other \
  --set agentrun-lifecycle-exporter.podMonitor.enabled=true
expect_fail "schema: the sidecar's TTL has upstream's minimum 0" "lifecycleExporter/jobTtlSecondsAfterFinished.*minimum" \
  "$helm" template agents "$parent" --set controllers.lifecycleExporter.jobTtlSecondsAfterFinished=-1
expect_fail "schema: the controller's TTL minimum 0 (as upstream)" "/controller/jobTtlSeconds.*minimum" \
  "$helm" template agents "$parent" --set controller.jobTtlSeconds=-1

"$helm" template agents "$parent" -n agents --set controllers.enabled=true,controllers.lifecycleExporter.enabled=true \
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
for want in '- "agents"' 'agentrun-lifecycle-exporter:9.9.9"' 'memory: 512Mi' \
  'readOnlyRootFilesystem: false' 'cpu: 10m' 'value: "http://otel-collector.observability.svc:4317"' 'name: exp-metrics'; do
  if grep -qF -- "$want" "$tmp/controllers.yaml"; then ok "sidecar: $want"; else ko "sidecar: missing $want"; fi
done
if grep -q '^kind: PodMonitor$' "$tmp/parent-on.yaml" && grep -q '^kind: PrometheusRule$' "$tmp/parent-on.yaml" &&
  count_is "$tmp/parent-on.yaml" '^kind: ConfigMap$' "$ndash" && grep -q 'app.kubernetes.io/instance: agents$' "$tmp/parent-on.yaml"; then
  ok "dependency renders PodMonitor (release selector), PrometheusRule and $ndash dashboard ConfigMaps"
else
  ko "dependency monitoring objects"
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
    "$helm" template agents "$parent" -n default --set controllers.enabled=true,controllers.lifecycleExporter.enabled=true \
      --set 'controller.namespaces={default}' \
      --set agentrun-lifecycle-exporter.podMonitor.enabled=true \
      --set agentrun-lifecycle-exporter.prometheusRule.enabled=true \
      --set agentrun-lifecycle-exporter.dashboards.enabled=true \
      --set agentrun-lifecycle-exporter.rbac.serviceAccountName=agents-sa >"$tmp/dry-parent.yaml"
    run "parent chart with the sidecar: accepted by the API server" "$kubectl" apply --dry-run=server -f "$tmp/dry-parent.yaml"
    # namespaceOverride: the release says kube-public, every object goes to default.
    "$helm" template agents "$parent" -n kube-public --set controllers.lifecycleExporter.enabled=true \
      --set namespaceOverride=default,agentrun-lifecycle-exporter.namespaceOverride=default \
      --set imagePolicy.requireDigest=true,image.digest=sha256:$(printf '%064d' 7),controllers.lifecycleExporter.image.digest=sha256:$(printf '%064d' 7) \
      --set agentrun-lifecycle-exporter.podMonitor.enabled=true \
      --set agentrun-lifecycle-exporter.rbac.serviceAccountName=agents-sa >"$tmp/dry-cp.yaml"
    run "parent chart, sidecar in the control-plane Deployment, namespaceOverride, digests: accepted by the API server" \
      "$kubectl" apply --dry-run=server -f "$tmp/dry-cp.yaml"
  fi
fi

echo
echo "deploy: $passed passed, $failed failed"
[[ $failed == 0 ]]
