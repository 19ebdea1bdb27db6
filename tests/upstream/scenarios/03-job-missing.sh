# shellcheck shell=bash
# Runtime job, the Pod runs 90 s ("-slow"). Once the controller has stamped
# status.runtimeRef.jobObservedAt, the harness deletes the Job (background propagation).
scenario_run() {
  start_controller
  apply_run job-missing-slow <<'YAML'
apiVersion: agents.proompteng.ai/v1alpha1
kind: AgentRun
metadata:
  name: job-missing-slow
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
  wait_for "jobObservedAt stamped on job-missing-slow" 60 run_job_observed job-missing-slow
  wait_for "job-missing-slow-job Pod running" 60 job_running job-missing-slow-job
  sleep 2
  act "delete Job job-missing-slow-job" k delete job job-missing-slow-job --wait=false >/dev/null
  wait_for "job-missing-slow Failed" 60 run_phase_is job-missing-slow Failed
  wait_for "job-missing-slow-job gone" 60 job_gone job-missing-slow-job
  sleep 5
}
