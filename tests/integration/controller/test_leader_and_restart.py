"""Leader election, failover and restarts: only the leader signs, a standby
finishes the work of a killed leader, and a graceful restart neither loses
nor double-signs a request."""

from __future__ import annotations

from lightkube.resources.coordination_v1 import Lease

from support.controller_harness import Controller, Env, condition, csr_pem, wait_for

# Shorter than the 15 s / 10 s / 2 s defaults only to keep the test short.
FAST_LEASE = ("--lease-duration", "6s", "--renew-deadline", "4s", "--retry-period", "1s")


async def _leader(env: Env) -> str:
    lease = await env.kube.get(Lease, "azure-keyvault-issuer-leader", namespace=env.namespace)
    return str(lease.spec.holderIdentity or "") if lease.spec else ""


async def _wait_leading(env: Env, controller: Controller) -> None:
    async def leading() -> bool:
        return controller.metric("akv_issuer_leader") == 1

    await wait_for(leading, what="controller to lead", env=env)


async def _request_many(env: Env, prefix: str, count: int, issuer: str) -> list[str]:
    names = [f"{prefix}-{i}" for i in range(count)]
    for name in names:
        await env.create_request(name, csr_pem("ec"), issuer)
    for name in names:
        await env.approve(name)
    return names


async def _issued(env: Env, names: list[str]) -> int:
    count = 0
    for name in names:
        ready = condition(await env.get_request(name), "Ready")
        count += ready is not None and ready.get("reason") == "Issued"
    return count


async def test_only_the_leader_signs_and_a_standby_finishes_after_sigkill(env: Env) -> None:
    ca = await env.make_ca("EC", curve="P-256")
    await env.create_issuer("ha", env.issuer_spec(ca))
    first = env.start_controller(
        "--leader-elect", "--leader-election-identity", "first", *FAST_LEASE
    )
    await _wait_leading(env, first)
    second = env.start_controller(
        "--leader-elect", "--leader-election-identity", "second", *FAST_LEASE
    )
    # A standby is ready (it can reach the Lease) but does not lead.
    await env.wait_ready(second)
    assert await _leader(env) == "first"
    assert second.metric("akv_issuer_leader") == 0

    names = await _request_many(env, "calm", 5, "ha")
    for name in names:
        env.openssl_verify(await env.wait_request(name, "Issued"), ca)
    assert first.metric("akv_issuer_certificaterequests_issued_total") == 5
    assert second.metric("akv_issuer_certificaterequests_issued_total") == 0

    # Slow signing down so that work is in flight when the leader dies.
    env.emulator.admin.update_faults({"latency_ms": 1000, "latency_operations": ["sign"]})
    names = await _request_many(env, "storm", 12, "ha")

    async def some_issued() -> bool:
        return await _issued(env, names) >= 2

    await wait_for(some_issued, what="a few requests issued", env=env)
    first.kill()  # SIGKILL: no release, the standby waits for the lease to expire
    for name in names:
        env.openssl_verify(await env.wait_request(name, "Issued"), ca)
    assert await _leader(env) == "second"
    assert second.metric("akv_issuer_certificaterequests_issued_total") >= 1
    assert second.metric("akv_issuer_certificaterequests_failed_total") == 0


async def test_sigterm_releases_the_lease_to_the_standby(env: Env) -> None:
    ca = await env.make_ca("RSA", size=2048)
    await env.create_issuer("handover", env.issuer_spec(ca))
    # Default lease timings: without the release the standby would wait 15 s.
    first = env.start_controller("--leader-elect", "--leader-election-identity", "first")
    await _wait_leading(env, first)
    second = env.start_controller("--leader-elect", "--leader-election-identity", "second")
    await env.wait_ready(second)
    assert first.terminate() == 0
    await _wait_leading(env, second)
    assert await _leader(env) == "second"
    names = await _request_many(env, "after", 2, "handover")
    for name in names:
        env.openssl_verify(await env.wait_request(name, "Issued"), ca)


async def test_graceful_restart_mid_flight_loses_and_double_signs_nothing(env: Env) -> None:
    ca = await env.make_ca("EC", curve="P-256")
    await env.create_issuer("steady", env.issuer_spec(ca))
    env.emulator.admin.update_faults({"latency_ms": 500, "latency_operations": ["sign"]})
    signs_before = env.sign_calls()
    first = env.start_controller("--concurrency", "2")
    names = await _request_many(env, "cr", 16, "steady")

    async def some_issued() -> bool:
        return await _issued(env, names) >= 3

    await wait_for(some_issued, what="a few requests issued", env=env)
    assert first.terminate() == 0  # SIGTERM: in-flight signing finishes and is written
    done_before_restart = await _issued(env, names)
    assert done_before_restart < len(names), "restart was not mid-flight"

    env.start_controller("--concurrency", "2")
    for name in names:
        env.openssl_verify(await env.wait_request(name, "Issued"), ca)
    assert env.sign_calls() - signs_before == len(names)
