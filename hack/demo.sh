#!/usr/bin/env bash
# `make demo`: the whole journey on the embedded defaults: a real kube-apiserver
# (built from Go modules, see docs/devcluster.md) and the Key Vault emulator.
#
#   CA key created in "Key Vault" -> root CA signed by it (akv-issuer ca create)
#   -> kustomize base applied -> controller running under its own ServiceAccount
#   -> Issuer Ready -> CertificateRequest approved -> Issued -> openssl verify
#   -> ClusterIssuer -> Kubernetes CSR approved (kubectl certificate approve)
#   -> status.certificate -> openssl verify
#
# Everything it starts is stopped on exit, also on Ctrl-C or failure.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=$PWD/.venv/bin
WORK=$(mktemp -d "${TMPDIR:-/tmp}/akv-demo.XXXXXX")
NS_SYSTEM=azure-keyvault-issuer-system
NS=demo
EMU_PID=""
CTRL_PID=""

cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  for pid in "$CTRL_PID" "$EMU_PID"; do
    if [[ -n "$pid" ]] && kill -0 "$pid" 2>/dev/null; then
      kill -TERM "$pid" 2>/dev/null || true
      wait "$pid" 2>/dev/null || true
    fi
  done
  if [[ -f "$WORK/cluster/devcluster.json" ]]; then
    "$BIN/akv-devcluster" down --dir "$WORK/cluster" >/dev/null 2>&1 || true
  fi
  if [[ $rc -ne 0 ]]; then
    echo "demo failed (exit $rc); logs:" >&2
    tail -n 30 "$WORK"/*.log 2>/dev/null >&2 || true
  fi
  rm -rf "$WORK"
  exit "$rc"
}
trap cleanup EXIT INT TERM

step() { printf '\n== %s\n' "$*"; }

step "Test binaries (built from Go modules on first use; several minutes on 2 cores)"
# Only what this demo runs: the control plane and kubectl (not helm, cert-manager, the node).
KUBECTL=$("$BIN/python" -m akv_devcluster.binaries ensure etcd kube-apiserver kubectl \
  | awk '$1 == "kubectl" {print $2}')
[[ -x "$KUBECTL" ]] || { echo "kubectl was not built" >&2; exit 1; }

step "Starting the local control plane (etcd + kube-apiserver, cert-manager CRDs)"
"$BIN/akv-devcluster" up --dir "$WORK/cluster"
export KUBECONFIG="$WORK/cluster/kubeconfig"
k() { "$KUBECTL" "$@"; }

step "Starting the Key Vault emulator"
"$BIN/akv-emulator" serve --host 127.0.0.1 --port 0 --state-dir "$WORK/emulator" \
  >"$WORK/emulator.log" 2>&1 &
EMU_PID=$!
for _ in $(seq 1 150); do
  [[ -s "$WORK/emulator/env" ]] && break
  kill -0 "$EMU_PID" 2>/dev/null || exit 1
  sleep 0.1
done
[[ -s "$WORK/emulator/env" ]] || { echo "emulator did not become ready" >&2; exit 1; }
# AKV_VAULT_URL, AKV_TLS_CA_FILE and the AZURE_* variables of a workload identity.
set -a; source "$WORK/emulator/env"; set +a
echo "vault: $AKV_VAULT_URL"

step "Creating an RSA-2048 CA key in Key Vault and a root CA signed by it"
"$BIN/akv-issuer" ca create --vault-url "$AKV_VAULT_URL" --key-name demo-ca \
  --create-key rsa-2048 --common-name "Demo Internal CA" --lifetime 365d \
  --upload-secret --out "$WORK/ca.pem"

step "Installing the kustomize base (CRDs, RBAC, approver role, Deployment)"
k apply --server-side -k config/default >/dev/null
k wait --for=condition=Established --timeout=60s \
  crd/issuers.azure-keyvault-issuer.gonicus.de crd/clusterissuers.azure-keyvault-issuer.gonicus.de
echo "applied config/default to namespace $NS_SYSTEM"

step "Running the controller under its ServiceAccount (no kubelet here, so as a local process)"
SA_KUBECONFIG=$("$BIN/akv-devcluster" identity --dir "$WORK/cluster" \
  --namespace "$NS_SYSTEM" --name azure-keyvault-issuer-controller-manager)
PROBE_PORT=$("$BIN/python" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
METRICS_PORT=$("$BIN/python" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
POD_NAMESPACE=$NS_SYSTEM "$BIN/akv-issuer" controller --kubeconfig "$SA_KUBECONFIG" \
  --leader-elect --metrics-bind-address "127.0.0.1:$METRICS_PORT" \
  --health-probe-bind-address "127.0.0.1:$PROBE_PORT" >"$WORK/controller.log" 2>&1 &
CTRL_PID=$!
for _ in $(seq 1 300); do
  curl -fs "http://127.0.0.1:$PROBE_PORT/readyz" >/dev/null 2>&1 && break
  kill -0 "$CTRL_PID" 2>/dev/null || exit 1
  sleep 0.1
done
curl -fs "http://127.0.0.1:$PROBE_PORT/readyz" >/dev/null || { echo "controller not ready" >&2; exit 1; }
echo "controller ready (pid $CTRL_PID)"

step "Creating an Issuer for the Key Vault key"
k create namespace "$NS" >/dev/null
k apply -f - <<EOF
apiVersion: azure-keyvault-issuer.gonicus.de/v1alpha1
kind: Issuer
metadata:
  name: demo-issuer
  namespace: $NS
spec:
  keyVaultBaseURL: $AKV_VAULT_URL
  keyName: demo-ca
EOF
k -n "$NS" wait --for=condition=Ready --timeout=60s issuer/demo-issuer
k get issuers.azure-keyvault-issuer.gonicus.de -A

step "Requesting a certificate (EC P-256 key made with openssl) and approving it"
openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
  -keyout "$WORK/leaf.key" -out "$WORK/leaf.csr" -subj "/CN=web.demo.svc" \
  -addext "subjectAltName=DNS:web.demo.svc,DNS:web.demo.svc.cluster.local" 2>/dev/null
k apply -f - <<EOF
apiVersion: cert-manager.io/v1
kind: CertificateRequest
metadata:
  name: web
  namespace: $NS
spec:
  request: $(base64 -w0 "$WORK/leaf.csr")
  duration: 720h
  usages: ["digital signature", "key encipherment", "server auth"]
  issuerRef:
    group: azure-keyvault-issuer.gonicus.de
    kind: Issuer
    name: demo-issuer
EOF
# cert-manager's approver would do this; the controller signs nothing before it.
NOW=$(date -u +%Y-%m-%dT%H:%M:%SZ)
k -n "$NS" patch certificaterequest web --subresource=status --type=merge -p \
  "{\"status\":{\"conditions\":[{\"type\":\"Approved\",\"status\":\"True\",\"reason\":\"demo\",\"message\":\"approved by make demo\",\"lastTransitionTime\":\"$NOW\"}]}}" \
  >/dev/null
k -n "$NS" wait --for=condition=Ready --timeout=60s certificaterequest/web
k -n "$NS" get certificaterequest web

step "Verifying the issued chain with openssl"
k -n "$NS" get certificaterequest web -o jsonpath='{.status.certificate}' | base64 -d >"$WORK/web.pem"
k -n "$NS" get certificaterequest web -o jsonpath='{.status.ca}' | base64 -d >"$WORK/web-ca.pem"
cmp -s "$WORK/web-ca.pem" "$WORK/ca.pem" || { echo "status.ca is not the CA created above" >&2; exit 1; }
openssl verify -x509_strict -purpose sslserver -CAfile "$WORK/web-ca.pem" "$WORK/web.pem"

step "A Kubernetes CSR (certificates.k8s.io) signed by a ClusterIssuer for the same key"
k apply -f - <<EOF
apiVersion: azure-keyvault-issuer.gonicus.de/v1alpha1
kind: ClusterIssuer
metadata:
  name: demo-cluster-issuer
spec:
  keyVaultBaseURL: $AKV_VAULT_URL
  keyName: demo-ca
EOF
k wait --for=condition=Ready --timeout=60s clusterissuer.azure-keyvault-issuer.gonicus.de/demo-cluster-issuer
openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
  -keyout "$WORK/client.key" -out "$WORK/client.csr" -subj "/CN=demo-client" 2>/dev/null
k apply -f - <<EOF
apiVersion: certificates.k8s.io/v1
kind: CertificateSigningRequest
metadata:
  name: demo-client
spec:
  request: $(base64 -w0 "$WORK/client.csr")
  signerName: clusterissuers.azure-keyvault-issuer.gonicus.de/demo-cluster-issuer
  expirationSeconds: 86400
  usages: ["digital signature", "client auth"]
EOF
k certificate approve demo-client >/dev/null
for _ in $(seq 1 300); do
  [[ -n "$(k get csr demo-client -o jsonpath='{.status.certificate}')" ]] && break
  sleep 0.2
done
k get csr demo-client -o jsonpath='{.status.certificate}' | base64 -d >"$WORK/client.pem"
[[ -s "$WORK/client.pem" ]] || { echo "the Kubernetes CSR was not signed" >&2; exit 1; }
k get csr demo-client
openssl verify -x509_strict -purpose sslclient -CAfile "$WORK/ca.pem" "$WORK/client.pem"

echo
echo "Summary:"
echo "  CA (key in Key Vault): $(openssl x509 -in "$WORK/ca.pem" -noout -subject -enddate | paste -sd ' ')"
echo "  issued:                $(openssl x509 -in "$WORK/web.pem" -noout -subject -enddate | paste -sd ' ')"
echo "  Kubernetes CSR:        $(openssl x509 -in "$WORK/client.pem" -noout -subject -enddate | paste -sd ' ')"
echo "  controller metrics:"
curl -s "http://127.0.0.1:$METRICS_PORT/metrics" \
  | grep -E '^akv_issuer_(certificaterequests_issued_total|keyvault_requests_total)' | sed 's/^/    /'
echo "DEMO OK: Issuer Ready, CertificateRequest and Kubernetes CSR issued by the Key Vault key, chains verified with openssl"
