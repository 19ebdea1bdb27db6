# shellcheck shell=bash
# A loop step (workflow loops enabled): step iterate, loop.maxIterations 2, no condition
# (continue until maxIterations), retries: 1. Every first attempt's Pod exits 1 ("-flaky":
# Job names ending in -attempt-1), so each iteration is retried once and its attempt 2 succeeds.
CONTROLLER_ENV=(AGENTS_CONTROLLER_WORKFLOW_LOOPS_ENABLED=true)
scenario_run() {
  start_controller
  local run=loop-flaky
  apply_run "${run}" <<'YAML'
apiVersion: agents.proompteng.ai/v1alpha1
kind: AgentRun
metadata:
  name: loop-flaky
spec:
  agentRef:
    name: smoke-agent
  implementationSpecRef:
    name: smoke-impl
  runtime:
    type: workflow
  workflow:
    steps:
      - name: iterate
        retries: 1
        parameters:
          stage: iterate
        loop:
          maxIterations: 2
  parameters:
    task: recording
YAML
  wait_for "${run} finished" 180 run_finished "${run}"
  note "final phase of ${run}: $(k get agentrun "${run}" -o jsonpath='{.status.phase}')"
  local j
  for j in $(k get jobs -l "agents.proompteng.ai/agent-run=${run}" -o jsonpath='{.items[*].metadata.name}'); do
    wait_for "${j} deleted (TTL 30 s)" 90 job_gone "${j}"
  done
}
