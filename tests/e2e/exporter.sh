#!/usr/bin/env bash
# The exporter under test in the end-to-end suite: one process watching every namespace of the test bed,
# exporting traces to its Jaeger and scraped by its Prometheus. run.sh starts it before the scenarios and
# stops it at the end; the restart scenario stops and starts it in between.
#   tests/e2e/exporter.sh start [grpc|http/protobuf]
#   tests/e2e/exporter.sh stop
#   tests/e2e/exporter.sh kill      (SIGKILL: no flush, no goodbye)
# EXPORTER_KUBECONFIG, when set, is the kubeconfig the exporter uses (e.g. through a proxy).
# Needs the test bed's env (TESTBED_STATE_DIR, JAEGER_OTLP_*_ENDPOINT, EXPORTER_METRICS_PORT) and
# EXPORTER_BIN (the built binary).
set -euo pipefail
state=${TESTBED_STATE_DIR:?source the test bed env first}
pidfile=$state/exporter.pid
log=$state/logs/exporter.log

stop() {
  [[ -f $pidfile ]] || return 0
  local pid
  pid=$(cat "$pidfile")
  rm -f "$pidfile"
  kill -TERM "$pid" 2>/dev/null || return 0
  for _ in $(seq 150); do
    kill -0 "$pid" 2>/dev/null || return 0
    sleep 0.1
  done
  echo "exporter $pid did not stop on SIGTERM; killing it" >&2
  kill -KILL "$pid" 2>/dev/null || true
}

kill_hard() {
  [[ -f $pidfile ]] || return 0
  local pid
  pid=$(cat "$pidfile")
  rm -f "$pidfile"
  kill -KILL "$pid" 2>/dev/null || true
  while kill -0 "$pid" 2>/dev/null; do sleep 0.05; done
}

start() {
  local protocol=${1:-grpc} endpoint
  case $protocol in
    grpc) endpoint=$JAEGER_OTLP_GRPC_ENDPOINT ;;
    http/protobuf) endpoint=$JAEGER_OTLP_HTTP_ENDPOINT ;;
    *) echo "unknown protocol $protocol" >&2; exit 2 ;;
  esac
  stop
  # Jaeger takes traces only; Prometheus scrapes the metrics.
  KUBECONFIG=${EXPORTER_KUBECONFIG:-$KUBECONFIG} \
    OTEL_EXPORTER_OTLP_ENDPOINT=$endpoint OTEL_EXPORTER_OTLP_PROTOCOL=$protocol OTEL_METRICS_EXPORTER=none \
    RUST_LOG=${RUST_LOG:-info} setsid "${EXPORTER_BIN:?}" watch --namespaces '*' \
    --metrics-addr "127.0.0.1:$EXPORTER_METRICS_PORT" --settle 3s --ttl-grace 20s \
    >>"$log" 2>&1 </dev/null &
  echo $! >"$pidfile"
  for _ in $(seq 200); do
    if curl -fsS "http://127.0.0.1:$EXPORTER_METRICS_PORT/readyz" >/dev/null 2>&1; then
      echo "exporter ready (pid $(cat "$pidfile"), OTLP $protocol)"
      return 0
    fi
    kill -0 "$(cat "$pidfile")" 2>/dev/null || { tail -20 "$log" >&2; echo "exporter exited" >&2; exit 1; }
    sleep 0.1
  done
  tail -20 "$log" >&2
  echo "exporter not ready in 20 s" >&2
  exit 1
}

case ${1:-} in
  start) start "${2:-grpc}" ;;
  stop) stop ;;
  kill) kill_hard ;;
  *) echo "usage: $0 start [grpc|http/protobuf] | stop | kill" >&2; exit 2 ;;
esac
