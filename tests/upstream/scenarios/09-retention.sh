# shellcheck shell=bash
# AgentRun retention: two job runs with spec.ttlSecondsAfterFinished: 20 (AgentRun
# retention) and a Job TTL of 600 s (runtime.config.ttlSecondsAfterFinished: 600 as a
# number, and "600s" as a string on the second run), resync every 10 s. retention-keep
# carries agents.proompteng.ai/retain: "true". The harness waits until retention-expire is
# gone, then until retention-keep is 20 s + two resyncs past its retention.
CONTROLLER_ENV=(AGENTS_CONTROLLER_RESYNC_INTERVAL_SECONDS=10)
scenario_run() {
  start_controller
  apply_run retention-expire <<'YAML'
apiVersion: agents.proompteng.ai/v1alpha1
kind: AgentRun
metadata:
  name: retention-expire
spec:
  agentRef:
    name: smoke-agent
  implementationSpecRef:
    name: smoke-impl
  ttlSecondsAfterFinished: 20
  runtime:
    type: job
    config:
      ttlSecondsAfterFinished: 600
  parameters:
    task: recording
YAML
  apply_run retention-keep <<'YAML'
apiVersion: agents.proompteng.ai/v1alpha1
kind: AgentRun
metadata:
  name: retention-keep
  annotations:
    agents.proompteng.ai/retain: "true"
spec:
  agentRef:
    name: smoke-agent
  implementationSpecRef:
    name: smoke-impl
  ttlSecondsAfterFinished: 20
  runtime:
    type: job
    config:
      ttlSecondsAfterFinished: "600s"
  parameters:
    task: recording
YAML
  wait_for "retention-expire Succeeded" 90 run_phase_is retention-expire Succeeded
  wait_for "retention-keep Succeeded" 90 run_phase_is retention-keep Succeeded
  wait_for "TTL patched on retention-keep-job" 30 job_has_ttl retention-keep-job
  wait_for "retention-expire deleted by retention" 120 run_gone retention-expire
  wait_for "retention-expire-job gone" 60 job_gone retention-expire-job
  local fin
  fin="$(k get agentrun retention-keep -o jsonpath='{.status.finishedAt}')"
  while (($(date +%s) < $(date -d "${fin}" +%s) + 45)); do sleep 1; done
  if k get agentrun retention-keep >/dev/null 2>&1 && job_exists retention-keep-job; then
    note "retention-keep and retention-keep-job still there 45 s after finishedAt"
  else
    note "retention-keep or its Job is gone"
  fi
}
