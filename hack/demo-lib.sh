# Steps `make demo` (hack/demo.sh) and `make demo-node` (hack/demo-node.sh)
# share; sourced, expects BIN and WORK set and sets EMU_PID.

step() { printf '\n== %s\n' "$*"; }

# start_emulator HOST: the Key Vault emulator on HOST (port chosen by it), its
# env file sourced (AKV_VAULT_URL, AKV_TLS_CA_FILE, AZURE_*, AKV_EMULATOR_*).
start_emulator() {
  "$BIN/akv-emulator" serve --host "$1" --port 0 --state-dir "$WORK/emulator" \
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
}

# create_ca COMMON_NAME: an RSA-2048 key "demo-ca" in Key Vault and a root CA
# signed by it (also stored as the key's secret), written to $WORK/ca.pem.
create_ca() {
  "$BIN/akv-issuer" ca create --vault-url "$AKV_VAULT_URL" --key-name demo-ca \
    --create-key rsa-2048 --common-name "$1" --lifetime 365d \
    --upload-secret --out "$WORK/ca.pem"
}

# approve_request NAMESPACE NAME WHO: set Approved=True on a CertificateRequest
# (what cert-manager's approver would do; the controller signs nothing before).
approve_request() {
  local now
  now=$(date -u +%Y-%m-%dT%H:%M:%SZ)
  k -n "$1" patch certificaterequest "$2" --subresource=status --type=merge -p \
    "{\"status\":{\"conditions\":[{\"type\":\"Approved\",\"status\":\"True\",\"reason\":\"demo\",\"message\":\"approved by $3\",\"lastTransitionTime\":\"$now\"}]}}" \
    >/dev/null
}
