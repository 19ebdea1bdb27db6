# shellcheck shell=bash
# Runtime workflow, three steps of 3 s each, all succeed; every step Job gets the TTL
# (30 s) patched after the write that collects it and is deleted by the TTL controller.
scenario_run() {
  start_controller
  apply_run wf-three <<'YAML'
apiVersion: agents.proompteng.ai/v1alpha1
kind: AgentRun
metadata:
  name: wf-three
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
        parameters:
          stage: plan
      - name: implement
        parameters:
          stage: implement
      - name: review
        parameters:
          stage: review
  parameters:
    task: recording
YAML
  wait_for "wf-three Succeeded" 120 run_phase_is wf-three Succeeded
  local j
  for j in wf-three-step-1-attempt-1 wf-three-step-2-attempt-1 wf-three-step-3-attempt-1; do
    wait_for "${j} deleted (TTL 30 s)" 90 job_gone "${j}"
  done
}
