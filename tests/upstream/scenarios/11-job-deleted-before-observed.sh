# shellcheck shell=bash
# A job run whose Pod runs 90 s ("-slow"). The harness freezes the controller (SIGSTOP)
# the moment the AgentRun shows status.runtimeRef (the write after the Job's creation) and
# before it stamps jobObservedAt, kills it (SIGKILL), deletes the Job, starts the
# controller again and pokes the run twice: the run stays Running, nothing is written.
scenario_run() {
  start_controller
  local run=unobserved-slow
  (
    # Freeze the controller as soon as the write with runtimeRef is visible.
    fifo="${RAW}/.freeze.fifo"
    mkfifo "${fifo}"
    "${KUBECTL}" -n "${NS}" get agentrun --watch -o jsonpath='{.metadata.name} {.status.runtimeRef.name}{"\n"}' \
      >"${fifo}" 2>/dev/null &
    kp=$!
    trap 'kill "${kp}" 2>/dev/null; rm -f "${fifo}"' EXIT
    trap 'exit 143' TERM
    while read -r name ref; do
      if [[ "${name}" == "${run}" && -n "${ref}" ]]; then
        kill -STOP "${CONTROLLER_PID}"
        printf '%s controller frozen (SIGSTOP): runtimeRef %s visible\n' "$(ts)" "${ref}" >>"${RAW}/actions.log"
        break
      fi
    done <"${fifo}"
  ) &
  local freezer=$!
  BG_PIDS+=("${freezer}")
  apply_run "${run}" <<'YAML'
apiVersion: agents.proompteng.ai/v1alpha1
kind: AgentRun
metadata:
  name: unobserved-slow
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
  wait_for "controller frozen" 60 grep -q 'controller frozen' "${RAW}/actions.log"
  stop_pid "${freezer}" TERM
  printf '%s controller stop (SIGKILL while frozen)\n' "$(ts)" >>"${RAW}/actions.log"
  kill -KILL "${CONTROLLER_PID}"
  wait "${CONTROLLER_PID}" 2>/dev/null || true
  printf '==== %s controller killed\n' "$(ts)" >>"${RAW}/controller.log"
  CONTROLLER_PID=""
  if run_job_observed "${run}" >/dev/null; then
    note "jobObservedAt was already stamped when the controller froze: the scenario did not happen"
  else
    note "runtimeRef written, jobObservedAt not stamped"
  fi
  act "delete Job ${run}-job" k delete job "${run}-job" --wait=false >/dev/null
  wait_for "${run}-job gone" 60 job_gone "${run}-job"
  start_controller
  sleep 10
  poke "${run}"
  sleep 10
  poke "${run}"
  sleep 10
  note "final phase of ${run}: $(k get agentrun "${run}" -o jsonpath='{.status.phase}')"
}
