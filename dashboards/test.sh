#!/usr/bin/env bash
# Checks of the Grafana dashboards in dashboards/.
#   bash dashboards/test.sh                          static checks
#   bash dashboards/test.sh --prometheus URL [...]   plus every panel query against Prometheus
# Options after the first are passed to dashboards/check.py (see --help).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
exec python3 dashboards/check.py "$@"
