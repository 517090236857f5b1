"""ServiceAccount tokens for ``auth.serviceAccountRef`` (``akv_issuer.controller.identity``):
a TokenRequest per ServiceAccount, cached, refreshed before it expires, one
request for concurrent callers, and failures the Key Vault layer can classify.

On the in-memory API server (it serves ``serviceaccounts/token``: 404 without
the ServiceAccount, tokens expiring on the fake clock) with the fake clock as
the tokens' wall clock.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
from collections.abc import AsyncIterator
from typing import Any

import pytest
from lightkube import AsyncClient

from akv_issuer.controller import identity
from akv_issuer.controller.identity import ServiceAccountTokens
from akv_issuer.controller.observability.metrics import Metrics
from akv_issuer.keyvault import AssertionProviderError, FederatedServiceAccount
from support.fakeclock import FakeClock
from support.fakekube import FakeKube

ROBOT = FederatedServiceAccount(
    namespace="team-a",
    name="issuer-robot",
    client_id="11111111-2222-3333-4444-555555555555",
    tenant_id="66666666-7777-8888-9999-000000000000",
)
MINUTE = 60.0


@pytest.fixture
def kube(clock: FakeClock) -> FakeKube:
    made = FakeKube(clock)
    made.add({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "team-a"}})
    made.add(
        {
            "apiVersion": "v1",
            "kind": "ServiceAccount",
            "metadata": {"name": "issuer-robot", "namespace": "team-a"},
        }
    )
    return made


@pytest.fixture
async def client(kube: FakeKube) -> AsyncIterator[AsyncClient]:
    made = kube.client(field_manager="azure-keyvault-issuer")
    yield made
    await made.close()


@pytest.fixture
def results() -> list[str]:
    return []


@pytest.fixture
def tokens(client: AsyncClient, clock: FakeClock, results: list[str]) -> ServiceAccountTokens:
    return ServiceAccountTokens(client, clock=clock.now, on_request=results.append)


def claims(token: str) -> dict[str, Any]:
    payload = token.split(".")[1]
    decoded: dict[str, Any] = json.loads(
        base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))
    )
    return decoded


def token_requests(kube: FakeKube) -> list[Any]:
    return kube.calls("create", "serviceaccounts/token")


async def test_a_token_of_the_service_account_for_the_exchange_audience(
    tokens: ServiceAccountTokens, kube: FakeKube, results: list[str]
) -> None:
    token = await tokens.token(ROBOT)

    assert claims(token)["sub"] == "system:serviceaccount:team-a:issuer-robot"
    assert claims(token)["aud"] == ["api://AzureADTokenExchange"]
    (request,) = token_requests(kube)
    assert (request.namespace, request.name) == ("team-a", "issuer-robot")
    assert request.body["spec"]["expirationSeconds"] == 3600
    assert results == ["201"]


async def test_the_token_is_cached_and_replaced_five_minutes_before_it_expires(
    tokens: ServiceAccountTokens, kube: FakeKube, clock: FakeClock
) -> None:
    first = await tokens.token(ROBOT)

    await clock.advance(55 * MINUTE - 1)
    assert await tokens.token(ROBOT) == first
    assert len(token_requests(kube)) == 1

    await clock.advance(1)  # 5 minutes left: not handed out any more
    second = await tokens.token(ROBOT)

    assert second != first
    assert len(token_requests(kube)) == 2
    assert claims(second)["exp"] == claims(first)["exp"] + 55 * 60


async def test_callers_at_the_same_time_share_one_token_request(
    tokens: ServiceAccountTokens, kube: FakeKube
) -> None:
    held = kube.hold("create", "serviceaccounts/token")
    waiting = [asyncio.create_task(tokens.token(ROBOT)) for _ in range(3)]
    await held.arrived.wait()
    held.release()

    got = await asyncio.gather(*waiting)

    assert len(set(got)) == 1
    assert len(token_requests(kube)) == 1


async def test_other_audiences_and_service_accounts_get_their_own_tokens(
    tokens: ServiceAccountTokens, kube: FakeKube
) -> None:
    kube.add(
        {
            "apiVersion": "v1",
            "kind": "ServiceAccount",
            "metadata": {"name": "other", "namespace": "team-a"},
        }
    )
    custom = FederatedServiceAccount(
        namespace="team-a",
        name="issuer-robot",
        client_id=ROBOT.client_id,
        tenant_id=ROBOT.tenant_id,
        audiences=("api://custom",),
    )
    other = FederatedServiceAccount(
        namespace="team-a", name="other", client_id=ROBOT.client_id, tenant_id=ROBOT.tenant_id
    )

    robot, robot_custom, other_token = (
        await tokens.token(ROBOT),
        await tokens.token(custom),
        await tokens.token(other),
    )

    assert claims(robot_custom)["aud"] == ["api://custom"]
    assert claims(other_token)["sub"] == "system:serviceaccount:team-a:other"
    assert len({robot, robot_custom, other_token}) == 3
    assert len(token_requests(kube)) == 3


async def test_forgetting_a_service_account_drops_its_tokens(
    tokens: ServiceAccountTokens, kube: FakeKube
) -> None:
    first = await tokens.token(ROBOT)
    tokens.forget("team-a", "issuer-robot")

    assert await tokens.token(ROBOT) != first
    assert len(token_requests(kube)) == 2


async def test_a_missing_service_account_is_a_permanent_error_naming_it(
    tokens: ServiceAccountTokens, kube: FakeKube, results: list[str]
) -> None:
    missing = FederatedServiceAccount(
        namespace="team-a", name="nobody", client_id=ROBOT.client_id, tenant_id=ROBOT.tenant_id
    )

    with pytest.raises(AssertionProviderError) as caught:
        await tokens.token(missing)

    assert not caught.value.retryable
    assert caught.value.message.startswith(
        "ServiceAccount team-a/nobody not found (it is looked up in the issuer's own namespace): "
    )
    assert results == ["404"]


async def test_a_forbidden_token_request_says_how_to_grant_it(
    tokens: ServiceAccountTokens, kube: FakeKube, results: list[str]
) -> None:
    kube.fail("create", "serviceaccounts/token", 403, message="forbidden by RBAC")

    with pytest.raises(AssertionProviderError) as caught:
        await tokens.token(ROBOT)

    assert not caught.value.retryable
    assert "may not create tokens for ServiceAccount team-a/issuer-robot" in caught.value.message
    assert "serviceaccounts/token" in caught.value.message
    assert results == ["403"]


async def test_an_unreachable_api_server_is_retryable_and_nothing_is_cached(
    tokens: ServiceAccountTokens, kube: FakeKube, results: list[str]
) -> None:
    kube.fail("create", "serviceaccounts/token", 503, message="etcd leader changed")
    kube.drop("create", "serviceaccounts/token")

    for _ in range(2):
        with pytest.raises(AssertionProviderError) as caught:
            await tokens.token(ROBOT)
        assert caught.value.retryable
        assert caught.value.message.startswith(
            "token request for ServiceAccount team-a/issuer-robot failed: "
        )

    token = await tokens.token(ROBOT)

    assert claims(token)["sub"] == "system:serviceaccount:team-a:issuer-robot"
    assert results == ["503", "error", "201"]


async def test_setup_counts_token_requests_in_the_metrics(
    client: AsyncClient, kube: FakeKube
) -> None:
    metrics = Metrics()
    tokens = identity.setup(client, metrics)

    await tokens.token(ROBOT)
    await tokens.token(ROBOT)  # cached

    value = metrics.registry.get_sample_value(
        "akv_issuer_serviceaccount_token_requests_total", {"result": "201"}
    )
    assert value == 1
    assert len(token_requests(kube)) == 1


async def test_no_token_is_ever_logged(
    tokens: ServiceAccountTokens, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)

    first = await tokens.token(ROBOT)
    await clock.advance(56 * MINUTE)
    second = await tokens.token(ROBOT)

    assert "new token for ServiceAccount team-a/issuer-robot" in caplog.text
    for token in (first, second):
        assert token not in caplog.text
        assert token.split(".")[1] not in caplog.text
