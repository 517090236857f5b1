"""Fixtures of the controller features' unit tests: the fake API server and
clock, a ``core.Host`` on them, a fake issuer side and a CA whose key the fake
Key Vault holds (see support/controllerkit.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from support.controllerkit import FakeHost, FakeIssuers, TestCA
from support.fakeclock import FakeClock
from support.fakekube import FakeKube


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def kube(clock: FakeClock) -> FakeKube:
    return FakeKube(clock)


@pytest.fixture
async def host(kube: FakeKube, clock: FakeClock) -> AsyncIterator[FakeHost]:
    made = FakeHost(kube, clock)
    yield made
    await made.close()


@pytest.fixture
def issuers(kube: FakeKube) -> FakeIssuers:
    return FakeIssuers(kube)


@pytest.fixture
def ca(host: FakeHost) -> TestCA:
    """A CA whose Key Vault key signs through its own FakeSigner."""
    made = TestCA()
    host.add_ca(made)
    return made
