#!/usr/bin/env bash
# `make demo`: the whole journey on the embedded defaults (Key Vault emulator,
# and later the local control plane). Everything it starts is stopped on exit.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=.venv/bin
WORK=$(mktemp -d "${TMPDIR:-/tmp}/akv-demo.XXXXXX")
EMU_PID=""

cleanup() {
  local rc=$?
  if [[ -n "$EMU_PID" ]] && kill -0 "$EMU_PID" 2>/dev/null; then
    kill -TERM "$EMU_PID" 2>/dev/null || true
    wait "$EMU_PID" 2>/dev/null || true
  fi
  rm -rf "$WORK"
  exit "$rc"
}
trap cleanup EXIT INT TERM

step() { printf '\n== %s\n' "$*"; }

step "Starting the Key Vault emulator"
"$BIN/akv-emulator" serve --host 127.0.0.1 --port 0 --state-dir "$WORK/emulator" \
  >"$WORK/emulator.log" 2>&1 &
EMU_PID=$!
for _ in $(seq 1 100); do
  [[ -s "$WORK/emulator/env" ]] && break
  kill -0 "$EMU_PID" 2>/dev/null || { cat "$WORK/emulator.log"; exit 1; }
  sleep 0.1
done
[[ -s "$WORK/emulator/env" ]] || { echo "emulator did not become ready" >&2; exit 1; }
set -a; source "$WORK/emulator/env"; set +a
echo "vault: $AKV_VAULT_URL"

step "Creating an RSA-2048 CA key in Key Vault and a root CA signed by it"
"$BIN/akv-issuer" ca create --vault-url "$AKV_VAULT_URL" --key-name demo-ca \
  --create-key rsa-2048 --common-name "Demo Internal CA" --lifetime 365d \
  --upload-secret --out "$WORK/ca.pem"

step "Making a key and CSR with openssl (EC P-256)"
openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
  -keyout "$WORK/leaf.key" -out "$WORK/leaf.csr" \
  -subj "/CN=demo.example.internal" -addext "subjectAltName=DNS:demo.example.internal" \
  2>/dev/null

step "Signing the CSR with the Key Vault key"
"$BIN/akv-issuer" sign --vault-url "$AKV_VAULT_URL" --key-name demo-ca \
  --csr "$WORK/leaf.csr" --duration 720h --usage "digital signature" --usage "server auth" \
  --out "$WORK/leaf.pem" --ca-out "$WORK/root.pem"

step "Verifying the chain with openssl"
openssl verify -x509_strict -CAfile "$WORK/root.pem" "$WORK/leaf.pem"

echo
echo "Summary:"
echo "  CA:   $(openssl x509 -in "$WORK/ca.pem" -noout -subject -enddate | tr '\n' ' ')"
echo "  leaf: $(openssl x509 -in "$WORK/leaf.pem" -noout -subject -ext subjectAltName 2>/dev/null | tr '\n' ' ')"
echo "DEMO OK: a certificate signed by a Key Vault key verified with openssl"
