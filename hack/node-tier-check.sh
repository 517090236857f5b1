#!/usr/bin/env bash
# Prints nothing where the node tier can run, else one line saying why not.
# The node tier (tests/node, tools/tests/node; docs/devcluster.md "A node")
# needs root and Debian's apt/dpkg: hack/install-node-deps.sh installs
# containerd, runc, CNI plugins, buildah, mmdebstrap, ... with apt-get.
# The Makefile reads it to leave the node tier out of `make test` elsewhere.
if [[ ${EUID} -ne 0 ]]; then
  echo "not root (the node tier runs a kubelet and containerd and installs Debian packages)"
elif ! command -v apt-get >/dev/null 2>&1 || ! command -v dpkg-query >/dev/null 2>&1; then
  echo "no apt-get/dpkg-query (the node tier installs its runtime from Debian packages)"
fi
