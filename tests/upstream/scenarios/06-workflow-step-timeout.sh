# shellcheck shell=bash
# Runtime workflow, one step plan with timeoutSeconds 15 and retries 1; attempt 1's Pod
# runs 90 s, later attempts 3 s ("-slowfirst"). Reconciles happen only on events, so
# the harness pokes the run (an annotation) once the timeout has passed. Then it waits
# until attempt 1's Job has finished on its own, to show it is never collected nor patched.
scenario_run() {
  start_controller
  apply_run wf-timeout-slowfirst <<'YAML'
apiVersion: agents.proompteng.ai/v1alpha1
kind: AgentRun
metadata:
  name: wf-timeout-slowfirst
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
        timeoutSeconds: 15
        parameters:
          stage: plan
  parameters:
    task: recording
YAML
  local run=wf-timeout-slowfirst
  wait_for "step 1 attempt 1 observed" 60 step_job_observed "${run}" 1 "${run}-step-1-attempt-1"
  local started
  started="$(step_field "${run}" 1 .startedAt)"
  while (($(date +%s) < $(date -d "${started}" +%s) + 17)); do sleep 0.5; done
  if step_phase_is "${run}" 1 Running && step_attempt_is "${run}" 1 1; then
    poke "${run}"
  fi
  wait_for "step 1 attempt 2" 60 step_attempt_is "${run}" 1 2
  wait_for "${run} Succeeded" 60 run_phase_is "${run}" Succeeded
  wait_for "${run}-step-1-attempt-2 deleted (TTL 30 s)" 90 job_gone "${run}-step-1-attempt-2"
  wait_for "${run}-step-1-attempt-1 finished (90 s Pod)" 120 job_finished "${run}-step-1-attempt-1"
  sleep 10
}
