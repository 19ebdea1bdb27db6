# shellcheck shell=bash
# Runtime job, the Pod exits 1 after 3 s (run name token "-fail"); backoffLimit 0.
scenario_run() {
  start_controller
  apply_run job-fail <<'YAML'
apiVersion: agents.proompteng.ai/v1alpha1
kind: AgentRun
metadata:
  name: job-fail
spec:
  agentRef:
    name: smoke-agent
  implementationSpecRef:
    name: smoke-impl
  runtime:
    type: job
  parameters:
    task: recording
YAML
  wait_for "job-fail Failed" 90 run_phase_is job-fail Failed
  wait_for "TTL patched on job-fail-job" 30 job_has_ttl job-fail-job
  wait_for "job-fail-job deleted (TTL 30 s)" 90 job_gone job-fail-job
}
