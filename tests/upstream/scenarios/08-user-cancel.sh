# shellcheck shell=bash
# Two running runs whose Pods run 90 s ("-slow"): one of runtime job, one of runtime
# workflow. Once both Jobs are observed and their Pods run, the harness deletes both
# AgentRuns (kubectl delete, background); the controller's finalizer deletes the Jobs.
scenario_run() {
  start_controller
  apply_run cancel-job-slow <<'YAML'
apiVersion: agents.proompteng.ai/v1alpha1
kind: AgentRun
metadata:
  name: cancel-job-slow
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
  apply_run cancel-wf-slow <<'YAML'
apiVersion: agents.proompteng.ai/v1alpha1
kind: AgentRun
metadata:
  name: cancel-wf-slow
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
  parameters:
    task: recording
YAML
  wait_for "cancel-job-slow observed" 60 run_job_observed cancel-job-slow
  wait_for "cancel-wf-slow step 1 observed" 60 step_job_observed cancel-wf-slow 1 cancel-wf-slow-step-1-attempt-1
  wait_for "cancel-job-slow-job Pod running" 60 job_running cancel-job-slow-job
  wait_for "cancel-wf-slow-step-1-attempt-1 Pod running" 60 job_running cancel-wf-slow-step-1-attempt-1
  sleep 2
  act "delete AgentRun cancel-job-slow" k delete agentrun cancel-job-slow --wait=false >/dev/null
  act "delete AgentRun cancel-wf-slow" k delete agentrun cancel-wf-slow --wait=false >/dev/null
  wait_for "cancel-job-slow gone" 60 run_gone cancel-job-slow
  wait_for "cancel-wf-slow gone" 60 run_gone cancel-wf-slow
  wait_for "cancel-job-slow-job gone" 60 job_gone cancel-job-slow-job
  wait_for "cancel-wf-slow-step-1-attempt-1 gone" 60 job_gone cancel-wf-slow-step-1-attempt-1
  sleep 5
}
