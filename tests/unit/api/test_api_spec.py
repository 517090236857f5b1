"""parse_issuer_spec: what a user writes becomes the IssuerSpec the controller uses."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from akv_issuer.controller import api
from support.api_schema import SAMPLES, load_one


def _spec(**overrides: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "keyVaultBaseURL": "https://my-vault.vault.azure.net/",
        "keyName": "my-ca-key",
    }
    spec.update(overrides)
    return spec


def _error(spec: Any) -> api.SpecError:
    with pytest.raises(api.SpecError) as caught:
        api.parse_issuer_spec(spec)
    return caught.value


def test_go_version_manifest_parses_with_the_old_meaning() -> None:
    spec = api.parse_issuer_spec(load_one(SAMPLES / "issuer-go-version.yaml")["spec"])
    assert spec == api.IssuerSpec(
        key_vault_base_url="https://my-vault.vault.azure.net",
        key_name="my-ca-key",
        key_version="8a4dd0d7f0e34b3ab2b4d1c0e3f2a1b0",
        ca_secret_name="my-ca-key",  # the Go version read the secret named like the key
        ca_secret_version=None,
        signature_algorithm=None,
        auth=api.AmbientAuth(),
        policy=api.PolicySpec(
            max_duration=None, allow_ca=False, max_path_length=None, backdate=timedelta(0)
        ),
    )


def test_full_manifest_parses_every_field() -> None:
    spec = api.parse_issuer_spec(load_one(SAMPLES / "issuer.yaml")["spec"])
    assert spec == api.IssuerSpec(
        key_vault_base_url="https://my-vault.vault.azure.net",
        key_name="team-a-intermediate",
        key_version=None,
        ca_secret_name="team-a-intermediate-chain",
        ca_secret_version="0f1e2d3c4b5a69788796a5b4c3d2e1f0",
        signature_algorithm="PS384",
        auth=api.WorkloadIdentityAuth(
            client_id="11111111-2222-3333-4444-555555555555",
            tenant_id="66666666-7777-8888-9999-000000000000",
        ),
        policy=api.PolicySpec(
            max_duration=timedelta(days=90),
            allow_ca=True,
            max_path_length=0,
            backdate=timedelta(minutes=5),
        ),
        crl_distribution_points=("http://pki.example.com/crl/team-a.crl",),
        ocsp_servers=("http://ocsp.example.com",),
        issuing_certificate_urls=("http://pki.example.com/ca/team-a.crt",),
    )


def test_client_secret_auth_has_no_namespace() -> None:
    spec = api.parse_issuer_spec(load_one(SAMPLES / "clusterissuer.yaml")["spec"])
    assert spec.auth == api.ClientSecretAuth(
        tenant_id="contoso.onmicrosoft.com",
        client_id="11111111-2222-3333-4444-555555555555",
        secret_ref=api.SecretKeyRef(name="keyvault-client-secret", key="clientSecret"),
    )
    assert spec.policy.max_duration == timedelta(hours=720)


@pytest.mark.parametrize("empty", ["", None])
def test_empty_versions_mean_latest(empty: str | None) -> None:
    spec = api.parse_issuer_spec(_spec(keyVersion=empty, caSecretVersion=empty))
    assert spec.key_version is None
    assert spec.ca_secret_version is None


def test_empty_auth_is_ambient() -> None:
    assert api.parse_issuer_spec(_spec(auth={})).auth == api.AmbientAuth()


def test_workload_identity_tenant_is_optional() -> None:
    auth = {"workloadIdentity": {"clientID": "11111111-2222-3333-4444-555555555555"}}
    spec = api.parse_issuer_spec(_spec(auth=auth))
    assert spec.auth == api.WorkloadIdentityAuth(
        client_id="11111111-2222-3333-4444-555555555555", tenant_id=None
    )


def test_policy_defaults_apply_when_policy_is_partial() -> None:
    spec = api.parse_issuer_spec(_spec(policy={"maxDuration": "1h30m"}))
    assert spec.policy == api.PolicySpec(
        max_duration=timedelta(minutes=90), allow_ca=False, max_path_length=None
    )


@pytest.mark.parametrize(
    ("value", "hint"),
    [
        ("90d", "2160h"),  # days are not a Go unit
        ("2160", "2160h"),  # a unit is required
        ("h", "2160h"),
        ("-1h", "2160h"),
        ("1.5.5h", "2160h"),
        ("1 h", "2160h"),
        ("300000000h", "292 years"),  # passes the pattern, overflows Go's int64
        ("0s", "longer than 0s"),
        ("0", "longer than 0s"),
    ],
)
def test_bad_max_duration_is_rejected_with_a_hint(value: str, hint: str) -> None:
    error = _error(_spec(policy={"maxDuration": value}))
    assert error.field == "policy.maxDuration"
    assert hint in error.reason
    assert str(error).startswith("spec.policy.maxDuration: ")


@pytest.mark.parametrize(("value", "hint"), [("1w", "2160h"), ("25h", "more than")])
def test_bad_backdate_is_rejected(value: str, hint: str) -> None:
    error = _error(_spec(policy={"backdate": value}))
    assert error.field == "policy.backdate"
    assert hint in error.reason


def test_backdate_of_a_day_is_allowed() -> None:
    spec = api.parse_issuer_spec(_spec(policy={"backdate": "24h"}))
    assert spec.policy.backdate == timedelta(hours=24)


@pytest.mark.parametrize(
    ("overrides", "field", "text"),
    [
        ({"keyVaultBaseURL": "http://my-vault.vault.azure.net"}, "keyVaultBaseURL", "https"),
        ({"keyVaultBaseURL": "https://v.vault.azure.net/keys"}, "keyVaultBaseURL", "https"),
        ({"keyName": "a" * 128}, "keyName", "1-127"),
        ({"keyName": "my_key"}, "keyName", "1-127"),
        ({"keyName": "my-key\n"}, "keyName", "1-127"),
        ({"caSecretName": "ca.pem"}, "caSecretName", "1-127"),
        ({"keyVersion": "v1/2"}, "keyVersion", "letters and digits"),
        ({"signatureAlgorithm": "RS1024"}, "signatureAlgorithm", "RS256"),
        ({"signatureAlgorithm": "ES256K"}, "signatureAlgorithm", "not one of"),
        ({"policy": {"maxPathLength": -1}}, "policy.maxPathLength", ">= 0"),
        ({"policy": {"maxPathLength": True}}, "policy.maxPathLength", "integer"),
        ({"policy": {"allowCA": "true"}}, "policy.allowCA", "boolean"),
        ({"crlDistributionPoints": ["pki.example.com/x.crl"]}, "crlDistributionPoints[0]", ""),
        ({"ocspServers": ["http://a"] * 11}, "ocspServers", "at most 10"),
        ({"issuingCertificateURLs": "http://a"}, "issuingCertificateURLs", "list"),
        (
            {"auth": {"workloadIdentity": {"clientID": "my-app"}}},
            "auth.workloadIdentity.clientID",
            "GUID",
        ),
        ({"policy": "strict"}, "policy", "object"),
    ],
)
def test_invalid_fields_name_the_field(overrides: dict[str, Any], field: str, text: str) -> None:
    error = _error(_spec(**overrides))
    assert error.field == field
    assert text in error.reason


def test_missing_required_field() -> None:
    error = _error({"keyVaultBaseURL": "https://v.vault.azure.net"})
    assert str(error) == "spec.keyName: is required"


def test_both_auth_methods_are_rejected() -> None:
    auth = {
        "workloadIdentity": {"clientID": "11111111-2222-3333-4444-555555555555"},
        "clientSecret": {
            "tenantID": "t",
            "clientID": "11111111-2222-3333-4444-555555555555",
            "secretRef": {"name": "s", "key": "k"},
        },
    }
    error = _error(_spec(auth=auth))
    assert error.field == "auth"
    assert "at most one" in error.reason


def test_client_secret_needs_a_secret_ref() -> None:
    auth = {"clientSecret": {"tenantID": "t", "clientID": "11111111-2222-3333-4444-555555555555"}}
    assert str(_error(_spec(auth=auth))) == "spec.auth.clientSecret.secretRef: is required"


def test_spec_must_be_an_object() -> None:
    assert str(_error(["keyName"])) == "spec: must be an object, got list"


def test_spec_error_is_a_value_error_with_the_field() -> None:
    error = _error(_spec(keyName=""))
    assert isinstance(error, ValueError)
    assert error.field == "keyName"


def test_crl_defaults_and_url_in_distribution_points() -> None:
    url = "http://crl.example.com/crl/issuer/ns/name.crl"
    off = api.parse_issuer_spec(_spec(crl={"url": url}))
    assert off.crl == api.CRLSpec(url=url)
    assert off.crl_urls == ()  # not enabled: the URL would point at nothing
    on = api.parse_issuer_spec(
        _spec(crl={"enabled": True, "url": url}, crlDistributionPoints=["http://a/x.crl"])
    )
    assert on.crl.validity == timedelta(hours=24)
    assert on.crl.overlap == timedelta(hours=8)
    assert on.crl_urls == ("http://a/x.crl", url)


@pytest.mark.parametrize(
    ("crl", "field"),
    [
        ({"validity": "30s"}, "crl.validity"),
        ({"validity": "1h", "renewBefore": "1h"}, "crl.renewBefore"),
        ({"renewBefore": "0s"}, "crl.renewBefore"),
        ({"url": "ldap://x/y"}, "crl.url"),
    ],
)
def test_crl_refuses(crl: dict[str, Any], field: str) -> None:
    with pytest.raises(api.SpecError) as err:
        api.parse_issuer_spec(_spec(crl=crl))
    assert err.value.field == field


# --- auth.serviceAccountRef ---------------------------------------------------

_SA = {"name": "akv-issuer", "clientID": "11111111-2222-3333-4444-555555555555"}


def test_service_account_ref_defaults_to_the_entra_exchange_audience() -> None:
    spec = api.parse_issuer_spec(_spec(auth={"serviceAccountRef": dict(_SA)}))
    assert spec.auth == api.ServiceAccountAuth(
        name="akv-issuer",
        client_id="11111111-2222-3333-4444-555555555555",
        tenant_id=None,
        audiences=("api://AzureADTokenExchange",),
    )


def test_service_account_ref_sample_parses_with_its_namespace_implied() -> None:
    manifest = load_one(SAMPLES / "issuer-serviceaccount.yaml")
    auth = api.parse_issuer_spec(manifest["spec"]).auth
    assert isinstance(auth, api.ServiceAccountAuth)
    assert (auth.name, auth.tenant_id) == ("akv-issuer", "66666666-7777-8888-9999-000000000000")
    assert "namespace" not in manifest["spec"]["auth"]["serviceAccountRef"]


def test_service_account_ref_audiences_replace_the_default() -> None:
    ref = {**_SA, "audiences": ["api://other", "api://AzureADTokenExchange"]}
    auth = api.parse_issuer_spec(_spec(auth={"serviceAccountRef": ref})).auth
    assert isinstance(auth, api.ServiceAccountAuth)
    assert auth.audiences == ("api://other", "api://AzureADTokenExchange")


@pytest.mark.parametrize("other", ["workloadIdentity", "clientSecret"])
def test_service_account_ref_excludes_the_other_methods(other: str) -> None:
    others = {
        "workloadIdentity": {"clientID": _SA["clientID"]},
        "clientSecret": {
            "tenantID": "contoso.onmicrosoft.com",
            "clientID": _SA["clientID"],
            "secretRef": {"name": "s", "key": "k"},
        },
    }
    err = _error(_spec(auth={"serviceAccountRef": dict(_SA), other: others[other]}))
    assert err.field == "auth"
    assert "serviceAccountRef" in err.reason


@pytest.mark.parametrize(
    ("ref", "field"),
    [
        ({"clientID": _SA["clientID"]}, "auth.serviceAccountRef.name"),
        ({"name": "akv-issuer"}, "auth.serviceAccountRef.clientID"),
        ({**_SA, "name": "Not_A_Name"}, "auth.serviceAccountRef.name"),
        ({**_SA, "audiences": ["has space"]}, "auth.serviceAccountRef.audiences[0]"),
        ({**_SA, "audiences": [f"a{i}" for i in range(11)]}, "auth.serviceAccountRef.audiences"),
    ],
)
def test_service_account_ref_refuses_bad_fields(ref: dict[str, Any], field: str) -> None:
    assert _error(_spec(auth={"serviceAccountRef": ref})).field == field


# --- caSource and auth.authorityHost (Managed HSM, sovereign clouds, certificate objects) ---


def test_ca_source_defaults_to_the_ca_secret_in_the_keys_vault() -> None:
    spec = api.parse_issuer_spec(
        {"keyVaultBaseURL": "https://v.vault.azure.net/", "keyName": "ca", "caSecretVersion": "a1"}
    )
    assert spec.ca_source == api.KeyVaultSecretCA("https://v.vault.azure.net", "ca", "a1")
    assert spec.ca_source_explicit is None
    assert spec.authority_host is None


def test_ca_source_samples() -> None:
    hsm = api.parse_issuer_spec(load_one(SAMPLES / "issuer-managed-hsm.yaml")["spec"])
    assert hsm.ca_source == api.KubernetesSecretCA("team-a-ca", "ca.crt")
    other_vault = api.parse_issuer_spec(
        load_one(SAMPLES / "clusterissuer-managed-hsm.yaml")["spec"]
    )
    assert other_vault.ca_source == api.KeyVaultSecretCA(
        "https://contoso-pki-certs.vault.azure.net",
        "platform-ca-chain",
        "0f1e2d3c4b5a69788796a5b4c3d2e1f0",
    )
    assert "in https://contoso-pki-certs.vault.azure.net" in other_vault.ca_description
    cert = api.parse_issuer_spec(load_one(SAMPLES / "issuer-keyvault-certificate.yaml")["spec"])
    assert isinstance(cert.ca_source, api.KeyVaultCertificateCA)
    assert cert.ca_source.name == "team-b-ca"
    assert cert.authority_host == "https://login.microsoftonline.us"


def test_kubernetes_secret_key_defaults_to_ca_crt() -> None:
    spec = api.parse_issuer_spec(
        {"keyVaultBaseURL": "https://h.managedhsm.azure.net", "keyName": "k",
         "caSource": {"secret": {"name": "ca"}}}
    )  # fmt: skip
    assert spec.ca_source == api.KubernetesSecretCA("ca", "ca.crt")


@pytest.mark.parametrize(
    ("extra", "field", "message"),
    [
        ({"caSource": {}}, "caSource", "exactly one"),
        (
            {"caSource": {"secret": {"name": "a"}, "keyVaultCertificate": {"name": "b"}}},
            "caSource",
            "exactly one",
        ),
        (
            {"caSource": {"secret": {"name": "a"}}, "caSecretName": "x"},
            "caSecretName",
            "not be set together with caSource",
        ),
        (
            {"caSource": {"secret": {"name": "a"}}, "caRenewal": {"automatic": True}},
            "caRenewal.automatic",
            "cannot renew",
        ),
        ({"caSource": {"keyVaultSecret": {"name": "a"}}}, "caSource.keyVaultSecret.vaultBaseURL",
         "is required"),
        ({"auth": {"authorityHost": "http://login.test"}}, "auth.authorityHost", "https"),
    ],
)  # fmt: skip
def test_ca_source_refusals(extra: dict[str, object], field: str, message: str) -> None:
    spec = {"keyVaultBaseURL": "https://v.vault.azure.net", "keyName": "k", **extra}
    with pytest.raises(api.SpecError) as caught:
        api.parse_issuer_spec(spec)
    assert caught.value.field == field
    assert message in caught.value.reason


# --- spec.clusterTrustBundles (issue 25 point 3) ------------------------------------


def test_cluster_trust_bundles_absent_is_no_bundle_and_empty_is_the_opt_in() -> None:
    assert api.parse_issuer_spec(_spec()).cluster_trust_bundles is None
    opted = api.parse_issuer_spec(_spec(clusterTrustBundles={}))
    assert opted.cluster_trust_bundles == api.ClusterTrustBundlesSpec()


def test_cluster_trust_bundles_labels_and_overlap_parse() -> None:
    spec = api.parse_issuer_spec(
        _spec(
            clusterTrustBundles={
                "labels": {"trust.example.com/ring": "prod", "canary": ""},
                "overlap": "2160h",
            }
        )
    )
    assert spec.cluster_trust_bundles == api.ClusterTrustBundlesSpec(
        labels=(("canary", ""), ("trust.example.com/ring", "prod")),
        overlap=timedelta(hours=2160),
    )


@pytest.mark.parametrize(
    ("section", "field", "text"),
    [
        ({"labels": {"-bad": "x"}}, "clusterTrustBundles.labels['-bad']", "not a label key"),
        ({"labels": {"Bad.Prefix/x": "x"}}, "clusterTrustBundles.labels['Bad.Prefix/x']", "prefix"),
        ({"labels": {"x" * 64: "x"}}, f"clusterTrustBundles.labels['{'x' * 64}']", "at most 63"),
        ({"labels": {"ring": "a b"}}, "clusterTrustBundles.labels['ring']", "not a label value"),
        ({"labels": {"ring": "v" * 64}}, "clusterTrustBundles.labels['ring']", "not a label value"),
        ({"labels": {"ring": 3}}, "clusterTrustBundles.labels['ring']", "must be a string"),
        (
            {"labels": {"azure-keyvault-issuer.gonicus.de/issuer-name": "x"}},
            "clusterTrustBundles.labels['azure-keyvault-issuer.gonicus.de/issuer-name']",
            "the controller's own labels",
        ),
        (
            {"labels": {"app.kubernetes.io/managed-by": "me"}},
            "clusterTrustBundles.labels['app.kubernetes.io/managed-by']",
            "the controller's own labels",
        ),
        ({"labels": {f"k{i}": "v" for i in range(21)}}, "clusterTrustBundles.labels", "at most 20"),
        ({"labels": ["a=b"]}, "clusterTrustBundles.labels", "must be an object"),
        ({"overlap": "90d"}, "clusterTrustBundles.overlap", "Go duration"),
        ("yes", "clusterTrustBundles", "must be an object"),
    ],
)
def test_cluster_trust_bundles_refusals_name_the_field(section: Any, field: str, text: str) -> None:
    error = _error(_spec(clusterTrustBundles=section))
    assert error.field == field
    assert text in error.reason


# -- spec.podCertificates (issue 25) ---------------------------------------------------


def test_pod_certificates_absent_means_none_and_the_sample_parses() -> None:
    assert api.parse_issuer_spec(_spec()).pod_certificates is None
    sample = load_one(SAMPLES / "clusterissuer-pod-certificates.yaml")["spec"]
    pods = api.parse_issuer_spec(sample).pod_certificates
    assert pods == api.PodCertificatesSpec(
        namespace_labels=(("pod-certificates.example.com/enabled", "true"),),
        namespace_expressions=(api.LabelRequirement("tier", "NotIn", ("sandbox",)),),
        service_accounts=("frontend", "backend"),
        spiffe_trust_domain="cluster.example.com",
        dns_names=("$(SERVICE_ACCOUNT).$(NAMESPACE).svc",),
        key_types=("ECDSAP256", "ECDSAP384", "ED25519"),
        usages=("digital signature", "server auth", "client auth"),
        max_lifetime=timedelta(hours=24),
        refresh_before_percentage=50,
    )


def test_pod_certificates_defaults() -> None:
    pods = api.parse_issuer_spec(
        _spec(podCertificates={"spiffeTrustDomain": "example.org"})
    ).pod_certificates
    assert pods is not None
    assert pods.namespace_labels is None  # every namespace
    assert pods.service_accounts is None  # any ServiceAccount
    assert pods.key_types == api.POD_KEY_TYPES
    assert pods.usages == ("digital signature", "key encipherment", "server auth", "client auth")
    assert pods.max_lifetime == timedelta(hours=24)
    # An empty selector is written on purpose: every namespace, as unset.
    empty = api.parse_issuer_spec(
        _spec(podCertificates={"spiffeTrustDomain": "example.org", "namespaceSelector": {}})
    ).pod_certificates
    assert empty is not None
    assert empty.namespace_labels == ()
    assert empty.namespace_expressions == ()


@pytest.mark.parametrize(
    ("section", "field", "text"),
    [
        ({}, "podCertificates", "set spiffeTrustDomain, dnsNames or both"),
        (
            {"spiffeTrustDomain": "example.org", "maxLifetime": "30m"},
            "podCertificates.maxLifetime",
            "30m0s is outside what the PodCertificateRequest API allows (1h0m0s to 2184h0m0s)",
        ),
        (
            {"spiffeTrustDomain": "example.org", "maxLifetime": "2200h"},
            "podCertificates.maxLifetime",
            "outside what the PodCertificateRequest API allows",
        ),
        (
            {"dnsNames": ["$(POD_IP).example.com"]},
            "podCertificates.dnsNames[0]",
            "must be a DNS name of lowercase letters, digits, '-' and '.', with the placeholders",
        ),
        (
            {"dnsNames": ["$(NAMESPACE)..svc"]},
            "podCertificates.dnsNames[0]",
            "is not a DNS name",
        ),
        (
            {"spiffeTrustDomain": "Example.org"},
            "podCertificates.spiffeTrustDomain",
            "SPIFFE trust domain",
        ),
        (
            {"spiffeTrustDomain": "example.org", "keyTypes": ["RSA2048"]},
            "podCertificates.keyTypes[0]",
            "'RSA2048' is not one of RSA3072",
        ),
        (
            {"spiffeTrustDomain": "example.org", "keyTypes": []},
            "podCertificates.keyTypes",
            "at least one key type",
        ),
        (
            {"spiffeTrustDomain": "example.org", "usages": ["cert sign"]},
            "podCertificates.usages[0]",
            "'cert sign' is not one of",
        ),
        (
            {
                "spiffeTrustDomain": "example.org",
                "namespaceSelector": {"matchLabels": {"team": 7}},
            },
            "podCertificates.namespaceSelector.matchLabels.team",
            "must be a Kubernetes label value",
        ),
        (
            {
                "spiffeTrustDomain": "example.org",
                "namespaceSelector": {"matchLabels": {"bad key!": "x"}},
            },
            "podCertificates.namespaceSelector.matchLabels.bad key!",
            "is not a Kubernetes label name",
        ),
    ],
)
def test_pod_certificates_refuses_naming_the_field(
    section: dict[str, Any], field: str, text: str
) -> None:
    error = _error(_spec(podCertificates=section))
    assert error.field == field
    assert text in error.reason


def test_pod_certificates_namespace_selector_match_expressions_parse() -> None:
    selector = {
        "matchLabels": {"team": "a"},
        "matchExpressions": [
            {"key": "tier", "operator": "In", "values": ["prod", "staging", "prod"]},
            {"key": "example.com/sandbox", "operator": "DoesNotExist"},
            {"key": "pods", "operator": "Exists", "values": []},
        ],
    }
    parsed = api.parse_issuer_spec(
        _spec(podCertificates={"spiffeTrustDomain": "example.org", "namespaceSelector": selector})
    ).pod_certificates
    assert parsed is not None
    assert parsed.namespace_labels == (("team", "a"),)
    assert parsed.namespace_expressions == (
        api.LabelRequirement("tier", "In", ("prod", "staging")),
        api.LabelRequirement("example.com/sandbox", "DoesNotExist"),
        api.LabelRequirement("pods", "Exists"),
    )


_EXPRESSIONS = "podCertificates.namespaceSelector.matchExpressions"


@pytest.mark.parametrize(
    ("expressions", "field", "text"),
    [
        ([{"key": "tier", "operator": "In"}], f"{_EXPRESSIONS}[0].values", "at least one value"),
        (
            [{"key": "a", "operator": "Exists"}, {"key": "t", "operator": "NotIn", "values": []}],
            f"{_EXPRESSIONS}[1].values",
            "must list at least one value for operator NotIn",
        ),
        (
            [{"key": "tier", "operator": "Exists", "values": ["x"]}],
            f"{_EXPRESSIONS}[0].values",
            "must be empty for operator Exists",
        ),
        (
            [{"key": "tier", "operator": "DoesNotExist", "values": ["x"]}],
            f"{_EXPRESSIONS}[0].values",
            "must be empty for operator DoesNotExist",
        ),
        (
            [{"key": "tier", "operator": "Equals", "values": ["x"]}],
            f"{_EXPRESSIONS}[0].operator",
            "'Equals' is not one of In, NotIn, Exists, DoesNotExist",
        ),
        ([{"key": "tier"}], f"{_EXPRESSIONS}[0].operator", "is required"),
        ([{"operator": "Exists"}], f"{_EXPRESSIONS}[0].key", "is required"),
        ([{"key": "bad key!", "operator": "Exists"}], f"{_EXPRESSIONS}[0].key", "not a label key"),
        (
            [{"key": "tier", "operator": "In", "values": ["no spaces"]}],
            f"{_EXPRESSIONS}[0].values[0]",
            "must be a Kubernetes label value",
        ),
        ({"key": "tier", "operator": "Exists"}, _EXPRESSIONS, "must be a list"),
        (["tier"], f"{_EXPRESSIONS}[0]", "got string"),
    ],
)
def test_pod_certificates_match_expressions_refusals_name_the_field(
    expressions: Any, field: str, text: str
) -> None:
    section = {"spiffeTrustDomain": "example.org", "namespaceSelector": {}}
    section["namespaceSelector"]["matchExpressions"] = expressions
    error = _error(_spec(podCertificates=section))
    assert error.field == field
    assert text in error.reason


def test_pod_certificates_refresh_before_percentage_parses() -> None:
    section = {"spiffeTrustDomain": "cluster.test", "refreshBeforePercentage": 90}
    parsed = api.parse_issuer_spec(_spec(podCertificates=section)).pod_certificates
    assert parsed is not None
    assert parsed.refresh_before_percentage == 90
    default = api.parse_issuer_spec(_spec(podCertificates={"spiffeTrustDomain": "cluster.test"}))
    assert default.pod_certificates is not None
    assert default.pod_certificates.refresh_before_percentage is None


@pytest.mark.parametrize(("value", "text"), [(0, "must be >= 1"), (100, "1 to 99"), (True, "")])
def test_pod_certificates_refresh_before_percentage_out_of_range_names_the_field(
    value: object, text: str
) -> None:
    section = {"spiffeTrustDomain": "cluster.test", "refreshBeforePercentage": value}
    error = _error(_spec(podCertificates=section))
    assert error.field == "podCertificates.refreshBeforePercentage"
    assert text in error.reason
