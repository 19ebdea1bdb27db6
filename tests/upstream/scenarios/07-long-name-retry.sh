# shellcheck shell=bash
# Runtime workflow, a run named 51 characters, so "<run>-step-1-attempt-N" (68) is hashed
# to 54 characters + "-" + 8 hex of a sha1. Step plan has retries: 1; Pods run 20 s ("-r20").
# Once attempt 1's jobObservedAt is stamped, the harness deletes attempt 1's Job.
scenario_run() {
  start_controller
  local run=orchestration-spawned-run-with-a-very-long-name-r20
  apply_run "${run}" <<YAML
apiVersion: agents.proompteng.ai/v1alpha1
kind: AgentRun
metadata:
  name: ${run}
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
  parameters:
    task: recording
YAML
  wait_for "step 1 attempt 1 observed" 60 step_observed_attempt "${run}" 1 1
  local j1 j2
  j1="$(step_field "${run}" 1 .jobRef.name)"
  note "attempt 1 Job is ${j1} (${#j1} characters)"
  wait_for "${j1} Pod running" 60 job_running "${j1}"
  sleep 2
  act "delete Job ${j1}" k delete job "${j1}" --wait=false >/dev/null
  wait_for "step 1 attempt 2" 60 step_attempt_is "${run}" 1 2
  j2="$(step_field "${run}" 1 .jobRef.name)"
  note "attempt 2 Job is ${j2} (${#j2} characters)"
  wait_for "${run} Succeeded" 120 run_phase_is "${run}" Succeeded
  wait_for "${j2} deleted (TTL 30 s)" 90 job_gone "${j2}"
}
