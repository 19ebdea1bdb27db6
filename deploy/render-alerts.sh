#!/usr/bin/env bash
# Writes alerts/agentrun-lifecycle.rules.yaml: the chart's rules (templates/_rules.tpl) rendered with the chart's
# default values. The chart is the source; this file is generated for promtool and for non-Helm users.
#   deploy/render-alerts.sh           rewrite the file
#   deploy/render-alerts.sh --check   exit 1 (and show the diff) if the file is not what the chart renders
# Helm: $HELM, else helm on PATH.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(dirname "$here")
helm=${HELM:-helm}
out="$root/alerts/agentrun-lifecycle.rules.yaml"

render() {
  # helm prints "---" and "# Source: ..." before the document; drop those two lines.
  "$helm" template agentrun-lifecycle-exporter "$here/chart" \
    --set alerts.emitRulesFile=true --show-only templates/rules-file.yaml |
    awk 'NR == 1 && $0 == "---" { next } NR <= 2 && /^# Source: / { next } { print }'
}

tmp=$(mktemp)
trap 'rm -f "$tmp"' EXIT
render >"$tmp"
if [[ ${1:-} == --check ]]; then
  if ! diff -u "$out" "$tmp"; then
    echo "FAIL: $out is not what the chart renders; run deploy/render-alerts.sh" >&2
    exit 1
  fi
  echo "ok: $out matches the chart's default rendering"
else
  cp "$tmp" "$out"
  echo "wrote $out"
fi
