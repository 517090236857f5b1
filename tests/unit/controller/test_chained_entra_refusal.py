"""An Entra refusal seen through a credential chain is Forbidden, with Entra's text.

DefaultAzureCredential and the ambient chain (the AKS workload identity path)
raise one ClientAuthenticationError without a response whose message lists
each credential's failure; Entra's AADSTS answer is only in that text. It must
read as the same refusal a direct credential reports, not as an unreachable
vault. The message below is azure-identity's, as produced against the emulator.
"""

from __future__ import annotations

from azure.core.exceptions import ClientAuthenticationError

from akv_issuer.controller.api import IssuerReason
from akv_issuer.controller.core import keyvault_failure
from akv_issuer.keyvault import ErrorKind, classify

ENTRA = (
    "AADSTS70021: No matching federated identity record found for presented assertion. "
    "Assertion Issuer: 'https://kubernetes.default.svc.cluster.local'. "
    "Assertion Subject: 'system:serviceaccount:team:akv'. "
    "Assertion Audience: 'api://AzureADTokenExchange'."
)
CHAIN = (
    "DefaultAzureCredential failed to retrieve a token from the included credentials.\n"
    "Attempted credentials:\n"
    "\tEnvironmentCredential: EnvironmentCredential authentication unavailable. "
    "Environment variables are not fully configured.\n"
    f"\tWorkloadIdentityCredential: Microsoft Entra ID error '(invalid_client) {ENTRA}'\n"
    'Content: {"error": "invalid_client", "error_description": "..."}\n'
    "To mitigate this issue, please refer to the troubleshooting guidelines here at "
    "https://aka.ms/azsdk/python/identity/defaultazurecredential/troubleshoot."
)


def test_a_chained_refusal_keeps_entras_code_and_text() -> None:
    err = classify(ClientAuthenticationError(message=CHAIN), operation="get_key", vault_url="v")
    assert err.kind is ErrorKind.FORBIDDEN
    assert err.code == "invalid_client"
    assert err.message == f"Entra ID refused the credential: {ENTRA}"
    failed = keyvault_failure(err, "key 'ca'", IssuerReason.KEY_NOT_FOUND)
    assert failed.reason == IssuerReason.FORBIDDEN
    assert "AADSTS70021" in failed.message


def test_a_chain_with_no_entra_answer_is_still_credential_unavailable() -> None:
    text = (
        "DefaultAzureCredential failed to retrieve a token from the included credentials.\n"
        "Attempted credentials:\n\tWorkloadIdentityCredential: Cannot connect to host x:443"
    )
    err = classify(ClientAuthenticationError(message=text), operation="get_key", vault_url="v")
    assert err.code == "CredentialUnavailable"
    failed = keyvault_failure(err, "key 'ca'", IssuerReason.KEY_NOT_FOUND)
    assert failed.reason == IssuerReason.KEY_VAULT_UNREACHABLE
