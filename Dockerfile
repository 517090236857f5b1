# syntax=docker/dockerfile:1
# Controller image: `docker build -t <registry>/azure-keyvault-issuer:<tag> .`
# or, without a local Docker engine, `az acr build` (see docs/aks-quickstart.md).
#
# Build stage: the locked dependencies (uv.lock, hash-checked) into a virtual
# environment, then the production wheel (akv_issuer only) on top. The test
# tools (emulator, dev cluster: the uv workspace member tools/) are never in
# the build context (.dockerignore allow-list) nor in the wheel; `uv export
# --no-dev` leaves the dev group that pulls them in. tests/deploy/test_package.py
# runs the same steps on the host in a copy of this stage's COPY sources, checks
# the wheel's file list and starts the result.
# The base is pinned by digest (the tag is for the reader; the digest decides):
# the multi-platform index of python:3.12-slim-bookworm with Python 3.12.14 of
# 2026-08-25, as docker-library/repo-info records it. Update tag and digest
# together (CONTRIBUTING.md "Updating the image base"). Any base with `python3`
# (>= 3.11) and its venv module on PATH works (--build-arg PYTHON_IMAGE=...):
# `make image` uses a Debian bookworm root filesystem (python3, python3-venv)
# when no registry is reachable (tools/src/akv_devcluster/dockerfile.py).
ARG PYTHON_IMAGE=python:3.12-slim-bookworm@sha256:0f5b26b9518d002b6173fd61daad821fa340635ebfec5bba471013f9ca114579

FROM ${PYTHON_IMAGE} AS build
ARG UV_VERSION=0.13.9
# uv in a throwaway venv of its own: Debian's python3 has no pip and refuses
# installs into the system interpreter (PEP 668); the slim image is fine either way.
RUN python3 -m venv /opt/uv \
 && /opt/uv/bin/pip install --no-cache-dir --disable-pip-version-check "uv==${UV_VERSION}" \
 && ln -s /opt/uv/bin/uv /usr/local/bin/uv
ENV UV_PYTHON_DOWNLOADS=never \
    UV_LINK_MODE=copy \
    UV_COMPILE_BYTECODE=1 \
    UV_NO_CACHE=1
WORKDIR /src
# Dependencies first: this layer is reused while only the source changes.
COPY pyproject.toml uv.lock README.md LICENSE NOTICE ./
RUN uv export --frozen --no-dev --no-emit-project --format requirements-txt -o /tmp/requirements.txt \
 && uv venv --python "$(command -v python3)" /opt/venv \
 && uv pip install --python /opt/venv/bin/python --require-hashes --no-deps -r /tmp/requirements.txt
COPY src ./src
RUN uv build --wheel --out-dir /tmp/dist \
 && uv pip install --python /opt/venv/bin/python --no-deps /tmp/dist/*.whl

# Run stage: the same slim Python, the virtual environment, the license, nothing else.
FROM ${PYTHON_IMAGE}
COPY --from=build /opt/venv /opt/venv
COPY --from=build /src/LICENSE /src/NOTICE /usr/share/doc/azure-keyvault-issuer/
# After the COPY, so a new commit reuses the layers above. VERSION is
# pyproject.toml's version (`make image`/`make release` pass it; the default
# is checked by tests/deploy/test_release.py), REVISION the git commit.
ARG VERSION=0.1.0
ARG REVISION=
# Declared again: an ARG before the first FROM is not in a stage's scope (the
# label below was empty without it).
ARG PYTHON_IMAGE
LABEL org.opencontainers.image.title="azure-keyvault-issuer" \
      org.opencontainers.image.description="cert-manager external issuer signing with an Azure Key Vault key" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.source="https://github.com/azure-keyvault-issuer/azure-keyvault-issuer" \
      org.opencontainers.image.url="https://github.com/azure-keyvault-issuer/azure-keyvault-issuer" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.base.name="${PYTHON_IMAGE}"
# AKV_ISSUER_COMMIT: what `akv-issuer --version`, the start-up log line and
# akv_issuer_build_info report as the commit.
ENV PATH=/opt/venv/bin:/usr/local/bin:/usr/bin:/bin \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    AKV_ISSUER_COMMIT="${REVISION}"
# A numeric non-root user (no passwd entry needed), so Kubernetes can verify
# runAsNonRoot; the manifests run it with a read-only root filesystem.
USER 65532:65532
EXPOSE 8080 8081
# Exec form: no shell is involved at run time.
ENTRYPOINT ["/opt/venv/bin/akv-issuer", "controller"]
