# shellcheck shell=bash
# The incident: a job run whose Pod runs 10 s ("-r10"); the harness stops the controller
# (SIGTERM) once jobObservedAt is stamped, lets the Job finish, waits 40 s (> the 30 s
# TTL the controller will patch), and starts the controller again.
scenario_run() {
  start_controller
  apply_run incident-r10 <<'YAML'
apiVersion: agents.proompteng.ai/v1alpha1
kind: AgentRun
metadata:
  name: incident-r10
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
  wait_for "incident-r10 observed" 60 run_job_observed incident-r10
  stop_controller
  wait_for "incident-r10-job finished" 60 job_finished incident-r10-job
  note "controller down; waiting 40 s past the Job's completion"
  sleep 40
  start_controller
  wait_for "incident-r10 Succeeded" 60 run_phase_is incident-r10 Succeeded
  wait_for "incident-r10-job gone" 60 job_gone incident-r10-job
  sleep 5
}
