#!/usr/bin/env bash
# `make demo-node`: the controller as users run it, on a real node of the dev
# cluster (docs/devcluster.md): the image built from our Dockerfile, the Helm
# chart installed into a namespace enforcing the `restricted` Pod Security
# Standard, two replicas with leader election, an Issuer Ready against the Key
# Vault emulator, a CertificateRequest signed and verified with openssl.
#
#   make image (buildah, no registry) -> akv-devcluster up --node -> load-image
#   -> emulator on the host end of the node's link -> CA key + root CA
#   -> helm install (pullPolicy Never) -> Pods Ready -> Lease holder
#   -> Issuer (service principal secret) Ready -> CertificateRequest approved
#   -> Issued -> openssl verify
#
# Needs root (containerd, namespaces, cgroups). Everything it starts is
# stopped on exit, also on Ctrl-C or failure.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=$PWD/.venv/bin
WORK=$(mktemp -d "${TMPDIR:-/tmp}/akv-demo-node.XXXXXX")
NS=akv-demo
RELEASE=akv
EMU_PID=""

cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  if [[ -n "$EMU_PID" ]] && kill -0 "$EMU_PID" 2>/dev/null; then
    kill -TERM "$EMU_PID" 2>/dev/null || true
    wait "$EMU_PID" 2>/dev/null || true
  fi
  if [[ -f "$WORK/cluster/devcluster.json" ]]; then
    "$BIN/akv-devcluster" down --dir "$WORK/cluster" >/dev/null 2>&1 || true
  fi
  if [[ $rc -ne 0 ]]; then
    echo "demo-node failed (exit $rc); logs:" >&2
    tail -n 20 "$WORK"/*.log "$WORK"/cluster/logs/kubelet.log 2>/dev/null >&2 || true
  fi
  rm -rf "$WORK"
  exit "$rc"
}
trap cleanup EXIT INT TERM

step() { printf '\n== %s\n' "$*"; }

step "Binaries the demo runs (built from Go modules on first use; minutes on 2 cores)"
TOOLS=$("$BIN/python" -m akv_devcluster.binaries ensure etcd kube-apiserver kubectl helm \
  kube-controller-manager kube-scheduler kube-proxy kubelet)
KUBECTL=$(awk '$1 == "kubectl" {print $2}' <<<"$TOOLS")
HELM=$(awk '$1 == "helm" {print $2}' <<<"$TOOLS")

step "The controller image from the Dockerfile (make image: buildah, local Debian base)"
IMAGE_ARCHIVE=$("$BIN/python" -m akv_devcluster.dockerfile --out "$WORK/image.tar" | tail -n 1)
ls -lh "$IMAGE_ARCHIVE"

step "The dev cluster with a node (containerd, kubelet, kube-proxy, CNI bridge)"
"$BIN/akv-devcluster" up --dir "$WORK/cluster" --node
export KUBECONFIG="$WORK/cluster/kubeconfig"
k() { "$KUBECTL" "$@"; }
k get nodes -o wide
"$BIN/akv-devcluster" load-image --dir "$WORK/cluster" "$IMAGE_ARCHIVE"
HOST_IP=$("$BIN/python" -c "
from akv_devcluster import DevCluster
print(DevCluster.attach('$WORK/cluster').node_network.host_ip)")

step "The Key Vault emulator on $HOST_IP (where Pods reach the host)"
"$BIN/akv-emulator" serve --host "$HOST_IP" --port 0 --state-dir "$WORK/emulator" \
  >"$WORK/emulator.log" 2>&1 &
EMU_PID=$!
for _ in $(seq 1 150); do
  [[ -s "$WORK/emulator/env" ]] && break
  kill -0 "$EMU_PID" 2>/dev/null || exit 1
  sleep 0.1
done
[[ -s "$WORK/emulator/env" ]] || { echo "emulator did not become ready" >&2; exit 1; }
set -a; source "$WORK/emulator/env"; set +a
echo "vault: $AKV_VAULT_URL"

step "An RSA-2048 CA key in Key Vault and a root CA signed by it"
"$BIN/akv-issuer" ca create --vault-url "$AKV_VAULT_URL" --key-name demo-ca \
  --create-key rsa-2048 --common-name "Demo Node CA" --lifetime 365d \
  --upload-secret --out "$WORK/ca.pem"

step "helm install of deploy/charts/azure-keyvault-issuer into a restricted namespace"
k create namespace "$NS" >/dev/null
k label namespace "$NS" pod-security.kubernetes.io/enforce=restricted >/dev/null
k -n "$NS" create configmap akv-emulator-ca --from-file=ca.crt="$AKV_TLS_CA_FILE" >/dev/null
cat >"$WORK/values.yaml" <<VALUES
image: {repository: localhost/azure-keyvault-issuer, tag: dev, pullPolicy: Never}
replicaCount: 2
controller:
  tlsCAFile: /etc/akv-emulator/ca.crt
  verifyChallengeResource: false   # the emulator is not a vault domain
extraEnv: [{name: AZURE_AUTHORITY_HOST, value: "$AZURE_AUTHORITY_HOST"}]
extraVolumes: [{name: emulator-ca, configMap: {name: akv-emulator-ca}}]
extraVolumeMounts: [{name: emulator-ca, mountPath: /etc/akv-emulator, readOnly: true}]
VALUES
"$HELM" install "$RELEASE" deploy/charts/azure-keyvault-issuer -n "$NS" -f "$WORK/values.yaml" \
  --wait --timeout 180s >/dev/null
k -n "$NS" get pods -o wide
k -n "$NS" get lease azure-keyvault-issuer-leader -o jsonpath='leader: {.spec.holderIdentity}{"\n"}'

step "An Issuer with a service principal's secret"
k -n "$NS" create secret generic keyvault-client-secret \
  --from-literal=clientSecret="$AKV_EMULATOR_SP_CLIENT_SECRET" >/dev/null
k apply -f - <<EOF2
apiVersion: azure-keyvault-issuer.gonicus.de/v1alpha1
kind: Issuer
metadata: {name: demo-issuer, namespace: $NS}
spec:
  keyVaultBaseURL: $AKV_VAULT_URL
  keyName: demo-ca
  auth:
    clientSecret:
      tenantID: $AKV_EMULATOR_TENANT_ID
      clientID: $AKV_EMULATOR_SP_CLIENT_ID
      secretRef: {name: keyvault-client-secret, key: clientSecret}
EOF2
k -n "$NS" wait --for=condition=Ready --timeout=90s issuer.azure-keyvault-issuer.gonicus.de/demo-issuer

step "A CertificateRequest, approved, signed by the Pod"
openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
  -keyout "$WORK/leaf.key" -out "$WORK/leaf.csr" -subj "/CN=web.demo.svc" \
  -addext "subjectAltName=DNS:web.demo.svc" 2>/dev/null
k apply -f - <<EOF2
apiVersion: cert-manager.io/v1
kind: CertificateRequest
metadata: {name: web, namespace: $NS}
spec:
  request: $(base64 -w0 "$WORK/leaf.csr")
  usages: ["digital signature", "key encipherment", "server auth"]
  issuerRef: {group: azure-keyvault-issuer.gonicus.de, kind: Issuer, name: demo-issuer}
EOF2
NOW=$(date -u +%Y-%m-%dT%H:%M:%SZ)
k -n "$NS" patch certificaterequest web --subresource=status --type=merge -p \
  "{\"status\":{\"conditions\":[{\"type\":\"Approved\",\"status\":\"True\",\"reason\":\"demo\",\"message\":\"approved by make demo-node\",\"lastTransitionTime\":\"$NOW\"}]}}" \
  >/dev/null
k -n "$NS" wait --for=condition=Ready --timeout=90s certificaterequest/web
k -n "$NS" get certificaterequest web -o jsonpath='{.status.certificate}' | base64 -d >"$WORK/web.pem"
openssl verify -x509_strict -purpose sslserver -CAfile "$WORK/ca.pem" "$WORK/web.pem"
echo "DEMO-NODE OK: chart Pods Ready in a restricted namespace, Issuer Ready, certificate verified"
