"""Minimal images of the Go-built upstream binaries, for Pods on the dev cluster's node.

Each image is one static binary (built by ``akv_devcluster.binaries`` from
its wrapper module under hack/), the host's CA bundle at the usual Debian path
(for binaries that talk to anything outside the cluster) and the nonroot user
65532, the same shape as upstream's distroless images. They are written by
``images.write_image_archive`` (no registry, no daemon, deterministic: the
same binary gives the same image ID), cached under the user cache by the
binary's digest, and imported into the node with ``node.load_image``. The
tag is the upstream version, the repository ``localhost/<binary name>``, so
charts point at them with ``image.repository``/``tag`` and ``pullPolicy: Never``.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from akv_devcluster import binaries as bins
from akv_devcluster.cluster import DevCluster
from akv_devcluster.images import write_image_archive
from akv_devcluster.node import load_image

CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
NONROOT = "65532:65532"


class GoImageError(bins.BinariesError):
    """An image could not be made; one-line message."""


@dataclass(frozen=True)
class GoImage:
    binary: bins.GoBinary
    # Where the binary sits in the image, when a chart names it in `command:`.
    path: str = ""

    @property
    def repository(self) -> str:
        return f"localhost/{self.binary.name}"

    @property
    def tag(self) -> str:
        return self.binary.version

    @property
    def ref(self) -> str:
        return f"{self.repository}:{self.tag}"

    @property
    def entrypoint(self) -> str:
        return self.path or f"/{self.binary.name}"


CERT_MANAGER_CONTROLLER = GoImage(bins.CERT_MANAGER_CONTROLLER)
CERT_MANAGER_WEBHOOK = GoImage(bins.CERT_MANAGER_WEBHOOK)
CERT_MANAGER_CAINJECTOR = GoImage(bins.CERT_MANAGER_CAINJECTOR)
# Its chart runs `command: [/manager]`, as upstream's image is laid out.
WORKLOAD_IDENTITY_WEBHOOK = GoImage(bins.WORKLOAD_IDENTITY_WEBHOOK, "/manager")


def _binary(image: GoImage, *, build: bool) -> Path:
    if build:
        return bins.ensure_binary(image.binary)
    if bins._is_fresh(image.binary):
        return bins.binary_path(image.binary)
    raise GoImageError(
        f"{image.binary.name} {image.binary.version} is not built yet; run `make binaries`"
    )


def image_archive(image: GoImage, *, build: bool = False) -> Path:
    """The image as a docker-archive in the cache (written when the binary changed)."""
    binary = _binary(image, build=build)
    digest = hashlib.sha256(image.entrypoint.encode() + binary.read_bytes()).hexdigest()[:16]
    archive = bins.cache_root() / "images" / f"{image.binary.name}-{image.tag}-{digest}.tar"
    if not archive.is_file():
        files: dict[str, Path | bytes] = {image.entrypoint: binary}
        if CA_BUNDLE.is_file():
            files[str(CA_BUNDLE)] = CA_BUNDLE
        write_image_archive(archive, image.ref, files, entrypoint=[image.entrypoint], user=NONROOT)
    return archive


def load_images(cluster: DevCluster, images: list[GoImage], *, build: bool = False) -> list[str]:
    """Make and import the images into the node of ``cluster``; their references."""
    for image in images:
        load_image(cluster, image_archive(image, build=build))
    return [image.ref for image in images]
