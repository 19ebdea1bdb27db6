# shellcheck shell=bash
# Runtime job, the Pod exits 0 after 3 s; the controller collects the Job, patches the
# TTL (AGENTS_AGENT_RUNNER_JOB_TTL_SECONDS=30) and the TTL controller deletes the Job.
scenario_run() {
  start_controller
  apply_run job-success <<'YAML'
apiVersion: agents.proompteng.ai/v1alpha1
kind: AgentRun
metadata:
  name: job-success
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
  wait_for "job-success Succeeded" 90 run_phase_is job-success Succeeded
  wait_for "TTL patched on job-success-job" 30 job_has_ttl job-success-job
  wait_for "job-success-job deleted (TTL 30 s)" 90 job_gone job-success-job
}
