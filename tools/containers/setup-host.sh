#!/usr/bin/env bash
# Prepares a Debian bookworm host (root) for tools/containers and deploy/test/containers.spec.ts:
# installs podman, runc and mmdebstrap (and aardvark-dns, podman's DNS for Service names, and
# catatonit, the pods' infra process: both only Recommends of podman) when missing, and configures
# podman for this machine kind in a drop-in (/etc/containers/containers.conf.d/50-dsi.conf):
#   runtime = "runc"       crun refuses hybrid (v1 + v2) cgroup hierarchies
#   default_ulimits = []   podman's default nofile/nproc exceed the hard limits here
# Idempotent; .ci/run calls it.
set -euo pipefail

packages=(podman runc mmdebstrap aardvark-dns catatonit)
missing=()
for pkg in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2> /dev/null | grep -q 'install ok installed' || missing+=("$pkg")
done
if [ "${#missing[@]}" -gt 0 ]; then
  if [ "$(id -u)" != 0 ]; then
    echo "setup-host: missing ${missing[*]}; as root: apt-get install -y ${missing[*]}" >&2
    exit 1
  fi
  echo "setup-host: installing ${missing[*]}"
  # An unreachable third-party source fails only its own index; Debian's are what is needed.
  apt-get update -qq || true
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"
fi

conf=/etc/containers/containers.conf.d/50-dsi.conf
want='# Written by tools/containers/setup-host.sh.
[containers]
default_ulimits = []

[engine]
runtime = "runc"'
if [ "$(cat "$conf" 2> /dev/null)" != "$want" ]; then
  if [ "$(id -u)" != 0 ]; then
    echo "setup-host: as root, write $conf:" >&2
    echo "$want" >&2
    exit 1
  fi
  mkdir -p "$(dirname "$conf")"
  printf '%s\n' "$want" > "$conf"
  echo "setup-host: wrote $conf"
fi
echo "setup-host: podman $(podman version --format '{{.Client.Version}}'), runtime $(podman info --format '{{.Host.OCIRuntime.Name}}')"
