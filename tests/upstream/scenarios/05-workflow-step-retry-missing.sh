# shellcheck shell=bash
# Runtime workflow, steps plan (retries: 1) and implement; Pods run 15 s ("-r15").
# Once step 1's jobObservedAt is stamped, the harness deletes attempt 1's Job.
scenario_run() {
  start_controller
  apply_run wf-retry-missing-r15 <<'YAML'
apiVersion: agents.proompteng.ai/v1alpha1
kind: AgentRun
metadata:
  name: wf-retry-missing-r15
spec:
  agentRef:
    name: smoke-agent
  implementationSpecRef:
    name: smoke-impl
  runtime:
    type: workflow
  workflow:
    steps:
      - name: plan
        retries: 1
        parameters:
          stage: plan
      - name: implement
        parameters:
          stage: implement
  parameters:
    task: recording
YAML
  local run=wf-retry-missing-r15
  wait_for "step 1 attempt 1 observed" 60 step_job_observed "${run}" 1 "${run}-step-1-attempt-1"
  wait_for "${run}-step-1-attempt-1 Pod running" 60 job_running "${run}-step-1-attempt-1"
  sleep 2
  act "delete Job ${run}-step-1-attempt-1" k delete job "${run}-step-1-attempt-1" --wait=false >/dev/null
  wait_for "step 1 attempt 2" 60 step_attempt_is "${run}" 1 2
  wait_for "${run} Succeeded" 120 run_phase_is "${run}" Succeeded
  local j
  for j in "${run}-step-1-attempt-2" "${run}-step-2-attempt-1"; do
    wait_for "${j} deleted (TTL 30 s)" 90 job_gone "${j}"
  done
}
