#!/usr/bin/env bash
# Checks the alerting and recording rules:
#   1. promtool check rules alerts/agentrun-lifecycle.rules.yaml
#   2. promtool test rules alerts/tests/*.yaml
#   3. coverage: every alert (and each of its severities) has a test where it fires, and a test where it does not
#   4. conventions (field-notes §4): AgentRun prefix, CamelCase, <= 40 chars; severity critical|warning|info;
#      static summary with a capital letter and a final period; templated description; runbook_url pointing at
#      docs/runbook.md#<lowercased name>, and that section exists
# The rules file is generated from the chart: deploy/test.sh checks it is up to date (needs helm).
# promtool: $PROMTOOL, else promtool on PATH (Debian: apt-get install -y --no-install-recommends prometheus).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(dirname "$here")
rules="$here/agentrun-lifecycle.rules.yaml"
runbook="$root/docs/runbook.md"
promtool=${PROMTOOL:-promtool}
if ! command -v "$promtool" >/dev/null 2>&1; then
  echo "FAIL: promtool not found (set PROMTOOL or install the prometheus package)" >&2
  exit 1
fi

passed=0
failed=0
step() { echo; echo "==> $*"; }
ok() { passed=$((passed + 1)); echo "ok: $*"; }
ko() { failed=$((failed + 1)); echo "FAIL: $*"; }

cd "$here"
step "$promtool check rules $(basename "$rules")"
if "$promtool" check rules "$rules"; then ok "promtool check rules"; else ko "promtool check rules"; fi

step "$promtool test rules tests/*.yaml"
if "$promtool" test rules tests/*.yaml; then ok "promtool test rules"; else ko "promtool test rules"; fi

# --- coverage -------------------------------------------------------------------------------------------------
step "coverage: every alert and severity fires in a test, and every alert has a not-firing case"
# "name severity" pairs defined in the rules file
defined=$(awk '
  /^  - alert: / { name = $3; next }
  /^  - record: / { name = ""; next }
  name != "" && /^      severity: / { print name, $2 }
' "$rules" | sort -u)
# from the tests: "name severity" for each expected firing alert, "name -" for each exp_alerts: []
tested=$(awk '
  /alertname: / { sub(/.*alertname: */, ""); name = $0; next }
  /exp_alerts: \[\]/ { if (name != "") print name, "-"; next }
  /severity: / && name != "" {
    s = $0; sub(/.*severity: */, "", s); sub(/[,} ].*/, "", s); print name, s
  }
' tests/*.yaml | sort -u)
cov_fail=0
while read -r name sev; do
  if ! grep -qx "$name $sev" <<<"$tested"; then echo "  no firing test for $name severity=$sev"; cov_fail=1; fi
  if ! grep -qx "$name -" <<<"$tested"; then echo "  no not-firing test (exp_alerts: []) for $name"; cov_fail=1; fi
done <<<"$defined"
if [[ $cov_fail == 0 ]]; then
  ok "coverage: $(wc -l <<<"$defined") alert/severity pairs, $(cut -d' ' -f1 <<<"$defined" | sort -u | wc -l) alerts"
else
  ko "coverage"
fi

# --- conventions ----------------------------------------------------------------------------------------------
step "conventions: names, severity, summary, description, runbook_url and runbook sections"
conv=$(awk -v runbook_base_re='#' '
  function fail(msg) { print "  " name ": " msg; bad = 1 }
  function check() {
    if (name == "") return
    if (name !~ /^AgentRun[A-Z][A-Za-z0-9]*$/) fail("name is not CamelCase with the AgentRun prefix")
    if (length(name) > 40) fail("name longer than 40 characters")
    if (sev !~ /^(critical|warning|info)$/) fail("severity \"" sev "\" is not critical, warning or info")
    if (summary == "") fail("no summary")
    if (summary ~ /\{\{/) fail("summary uses a template")
    if (summary !~ /^[A-Z]/ || summary !~ /\.$/) fail("summary needs a capital letter and a final period")
    if (desc !~ /\{\{/) fail("description uses no template")
    want = "#" tolower(name)
    if (substr(url, length(url) - length(want) + 1) != want || url !~ /\/docs\/runbook\.md#/) fail("runbook_url " url " does not end in docs/runbook.md" want)
  }
  /^  - (alert|record): / { check(); name = ""; sev = summary = desc = url = "" }
  /^  - alert: / { name = $3 }
  /^      severity: / { sev = $2 }
  /^      summary: / { summary = $0; sub(/^      summary: /, "", summary) }
  /^      description: / { desc = $0 }
  /^      runbook_url: / { url = $2 }
  END { check(); exit bad }
' "$rules") && conv_rc=0 || conv_rc=$?
[[ -n $conv ]] && echo "$conv"
names=$(awk '/^  - alert: / { print $3 }' "$rules" | sort -u)
missing_sections=0
for name in $names; do
  if ! grep -qx "## $name" "$runbook" 2>/dev/null; then
    echo "  docs/runbook.md has no section \"## $name\""
    missing_sections=1
  fi
done
if [[ $conv_rc == 0 && $missing_sections == 0 ]]; then
  ok "conventions: $(wc -w <<<"$names") alert names"
else
  ko "conventions"
fi

echo
echo "alerts: $passed passed, $failed failed"
[[ $failed == 0 ]]
