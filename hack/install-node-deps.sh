#!/usr/bin/env bash
# Debian packages the dev cluster's node and `make image` need (docs/devcluster.md):
#   containerd + runc        the container runtime the kubelet talks to (CRI)
#   containernetworking-plugins  bridge/host-local/loopback CNI plugins for Pod networking
#   iptables conntrack       kube-proxy's Service rules (inside the cluster's own network namespace)
#   catatonit                the static "pause" process of the locally built sandbox image
#   buildah mmdebstrap       `make image` without a Docker daemon or a registry
#   uidmap                   buildah's dependency for its user-namespace helpers
# Idempotent: installs only what is missing; needs root (CI and the dev machines are root).
set -euo pipefail
PACKAGES=(containerd runc containernetworking-plugins iptables conntrack catatonit
  buildah mmdebstrap uidmap)
missing=()
for pkg in "${PACKAGES[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed'; then
    missing+=("$pkg")
  fi
done
if [[ ${#missing[@]} -eq 0 ]]; then
  exit 0
fi
if [[ $(id -u) -ne 0 ]]; then
  echo "install-node-deps: missing Debian packages: ${missing[*]} (run as root: apt-get install ${missing[*]})" >&2
  exit 1
fi
echo "install-node-deps: installing ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
# Serialised: several make targets (or helpers) may call this at the same time.
exec 9>/var/lib/apt/.akv-install-node-deps.lock
flock 9
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
# Debian's containerd package enables and starts a system containerd; the dev
# cluster runs its own instance, so a system one is only left running if it was
# already there before this script.
