#!/usr/bin/env bash
# Checks the machine has what the test suite needs, and installs the missing Debian packages when it can
# (as root, or with password-less sudo). Toolchains (Rust, Go, Python 3) are not installed here.
set -euo pipefail

missing_tools=()
for tool in cargo go python3; do
  command -v "$tool" >/dev/null 2>&1 || [[ $tool == go && -x /usr/local/go/bin/go ]] || missing_tools+=("$tool")
done
if ((${#missing_tools[@]})); then
  echo "deps: missing toolchains: ${missing_tools[*]} (install Rust with rustup, Go >= 1.26, Python 3)" >&2
  exit 1
fi

# command -> Debian package
declare -A packages=(
  [prometheus]=prometheus [promtool]=prometheus [jq]=jq [openssl]=openssl [curl]=curl
  [ss]=iproute2 [ps]=procps [flock]=util-linux [setsid]=util-linux
)
# The real node (tests/e2e/testbed/node.sh; opt-in with TESTBED_REAL_NODE=1): container runtime, CNI plugins,
# iptables for kube-proxy, socat for its forwarders, gcc + libc6-dev (static libc) and umoci for the pause image.
if [[ ${TESTBED_REAL_NODE:-0} == 1 ]]; then
  packages+=(
    [containerd]=containerd [ctr]=containerd [runc]=runc [iptables]=iptables [ip6tables]=iptables
    [socat]=socat [gcc]=gcc [umoci]=umoci [ip]=iproute2 [sysctl]=procps
  )
fi
want=()
for cmd in "${!packages[@]}"; do
  command -v "$cmd" >/dev/null 2>&1 || want+=("${packages[$cmd]}")
done
# PyYAML: dashboards/generate.py reads the chart's values (deploy/chart/values.yaml). The Debian package serves the
# system python3; another python3 (pyenv, a venv) needs `python3 -m pip install pyyaml` instead.
if ! python3 -c 'import yaml' 2>/dev/null; then
  if [[ $(command -v python3) == /usr/bin/python3 ]]; then
    want+=(python3-yaml)
  else
    echo "deps: $(command -v python3) lacks PyYAML; install it (python3 -m pip install pyyaml) and run again" >&2
    exit 1
  fi
fi
if [[ ${TESTBED_REAL_NODE:-0} == 1 ]]; then
  [[ -x /usr/lib/cni/bridge ]] || want+=(containernetworking-plugins)
  [[ -f /usr/lib/x86_64-linux-gnu/libc.a || -f /usr/lib/$(uname -m)-linux-gnu/libc.a ]] || want+=(libc6-dev)
fi
((${#want[@]})) || exit 0
mapfile -t want < <(printf '%s\n' "${want[@]}" | sort -u)

if [[ $(id -u) -eq 0 ]]; then
  sudo=()
elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
  sudo=(sudo -n)
else
  echo "deps: missing Debian packages: ${want[*]}; install them (apt-get install ${want[*]}) and run again" >&2
  exit 1
fi
echo "deps: installing ${want[*]}"
export DEBIAN_FRONTEND=noninteractive
"${sudo[@]}" apt-get update -qq
"${sudo[@]}" apt-get install -y -qq --no-install-recommends "${want[@]}" >/dev/null
