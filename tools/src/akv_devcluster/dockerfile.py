"""Build the project's Dockerfile without a Docker daemon or a registry (``make image``).

The Dockerfile stays the one a Docker user builds (``docker build .``, base
``python:3.12-slim-bookworm`` pinned by digest). Here no registry answers, so:

1. the base is tried first by pulling the Dockerfile's default (its ``ARG
   PYTHON_IMAGE``, by digest); when that
   fails (no registry: the usual case on the project's machines) a base is
   made locally: ``mmdebstrap`` writes a Debian bookworm root filesystem with
   ``python3``, ``python3-venv`` and ``ca-certificates`` (cached as a tar under
   the user cache), which buildah commits as ``localhost/akv-debian-python3``;
2. Debian's ``buildah`` builds the Dockerfile with ``--isolation chroot``,
   ``--pull=never`` and vfs storage, everything (storage root, run root,
   temporary files) under ``~/.cache/azure-keyvault-issuer/buildah`` so nothing
   lands in /var/lib/containers; ``--layers`` keeps the dependency layer for
   warm builds;
3. the result is pushed to a ``docker save`` archive (``ctr images import``,
   ``docker load``, ``akv-devcluster load-image`` read it).

Every build passes the Dockerfile's ``VERSION`` (pyproject.toml's version) and
``REVISION`` (the checkout's commit) build arguments, so the image's OCI labels
and ``akv-issuer --version`` name what was built (akv_devcluster.project).

The Dockerfile's build stage installs the locked dependencies from PyPI
(uv), so PyPI must be reachable, as for ``make venv``.

Python API: ``build_image(out=..., tag=...) -> Path``;
CLI: ``python -m akv_devcluster.dockerfile [--base auto|debian|REF] [--out PATH]``
prints the archive path on its last line.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from akv_devcluster import project
from akv_devcluster.binaries import cache_root, file_lock

REPO_ROOT = project.REPO_ROOT
DEBIAN_BASE = "localhost/akv-debian-python3:bookworm"
IMAGE_TAG = "localhost/azure-keyvault-issuer:dev"
DEFAULT_ARCHIVE = REPO_ROOT / "build" / "azure-keyvault-issuer-image.tar"
DEBIAN_SUITE = "bookworm"
DEBIAN_PACKAGES = ("python3", "python3-venv", "ca-certificates")
_MIRRORS = (
    "deb http://deb.debian.org/debian bookworm main",
    "deb http://deb.debian.org/debian bookworm-updates main",
    "deb http://deb.debian.org/debian-security bookworm-security main",
)


class ImageBuildError(Exception):
    """The image could not be built; one-line message."""


def _log(message: str) -> None:
    print(f"[image] {message}", file=sys.stderr, flush=True)


def _storage() -> Path:
    return cache_root() / "buildah"


def _buildah(*args: str, what: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    if shutil.which("buildah") is None:
        raise ImageBuildError("buildah is missing (run hack/install-node-deps.sh)")
    storage = _storage()
    tmp = storage / "tmp"
    tmp.mkdir(parents=True, exist_ok=True)
    conf = storage / "containers.conf"
    if not conf.is_file():
        (storage / "cni").mkdir(parents=True, exist_ok=True)
        conf.write_text(f'[network]\nnetwork_config_dir = "{storage / "cni"}"\n')
    env = {
        **os.environ,
        "TMPDIR": str(tmp),
        "BUILDAH_ISOLATION": "chroot",
        "CONTAINERS_CONF": str(conf),
    }
    argv = [
        # A private mount namespace with its own /var/lib: buildah keeps a
        # blob-info cache in /var/lib/containers whatever --root says.
        "unshare",
        "--mount",
        "--propagation",
        "private",
        "--",
        "sh",
        "-c",
        'mount -t tmpfs -o mode=0755 tmpfs /var/lib && exec "$@"',
        "sh",
        "buildah",
        "--root",
        str(storage / "root"),
        "--runroot",
        str(storage / "runroot"),
        "--storage-driver",
        "vfs",
        *args,
    ]
    proc = subprocess.run(argv, capture_output=True, text=True, env=env, check=False)
    if check and proc.returncode != 0:
        lines = [line for line in proc.stderr.strip().splitlines() if line.strip()]
        raise ImageBuildError(f"{what} failed: {' | '.join(lines[-3:]) or proc.returncode}")
    return proc


def _lock() -> contextlib.AbstractContextManager[None]:
    return file_lock(_storage() / ".lock", "[image] another image build holds the lock; waiting")


def _has_image(ref: str) -> bool:
    return _buildah("inspect", "--type", "image", ref, what="inspect", check=False).returncode == 0


def debian_rootfs() -> Path:
    """A cached Debian root filesystem tar with python3 (mmdebstrap)."""
    key = hashlib.sha256(" ".join((DEBIAN_SUITE, *DEBIAN_PACKAGES, *_MIRRORS)).encode())
    rootfs = cache_root() / "images" / f"debian-{DEBIAN_SUITE}-python3-{key.hexdigest()[:12]}.tar"
    if rootfs.is_file():
        return rootfs
    if shutil.which("mmdebstrap") is None:
        raise ImageBuildError("mmdebstrap is missing (run hack/install-node-deps.sh)")
    rootfs.parent.mkdir(parents=True, exist_ok=True)
    partial = rootfs.with_name(f".{rootfs.name}.partial")
    _log(f"making a Debian {DEBIAN_SUITE} root filesystem with {', '.join(DEBIAN_PACKAGES)}")
    started = time.monotonic()
    proc = subprocess.run(
        [
            "mmdebstrap",
            "--quiet",
            "--variant=apt",
            f"--include={','.join(DEBIAN_PACKAGES)}",
            # Documentation and translations are dead weight in an image.
            "--dpkgopt=path-exclude=/usr/share/doc/*",
            "--dpkgopt=path-exclude=/usr/share/man/*",
            "--dpkgopt=path-exclude=/usr/share/locale/*",
            "--dpkgopt=path-exclude=/usr/share/info/*",
            "--customize-hook=rm -rf $1/var/lib/apt/lists/* $1/var/cache/apt/*",
            "--format=tar",
            DEBIAN_SUITE,
            str(partial),
            *_MIRRORS,
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        partial.unlink(missing_ok=True)
        tail = " | ".join(proc.stderr.strip().splitlines()[-3:])
        raise ImageBuildError(f"mmdebstrap failed: {tail}")
    partial.replace(rootfs)
    _log(f"root filesystem {rootfs} in {time.monotonic() - started:.0f}s")
    return rootfs


def _debian_base() -> str:
    rootfs = debian_rootfs()
    # The rootfs file name carries its inputs' digest; the image is remade
    # when it changes.
    label = rootfs.stem
    found = _buildah(
        "inspect",
        "--type",
        "image",
        "--format",
        "{{.ImageAnnotations}}{{.Docker.Config.Labels}}",
        DEBIAN_BASE,
        what="inspect",
        check=False,
    )
    if found.returncode == 0 and label in found.stdout:
        return DEBIAN_BASE
    container = _buildah("from", "--pull=never", "scratch", what="buildah from scratch").stdout
    container = container.strip()
    try:
        _buildah("add", container, str(rootfs), "/", what="adding the Debian root filesystem")
        _buildah(
            "config",
            "--env",
            "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            "--cmd",
            "python3",
            "--label",
            f"org.opencontainers.image.base.name=debian:{DEBIAN_SUITE}",
            "--label",
            f"akv.rootfs={label}",
            container,
            what="buildah config",
        )
        _buildah("commit", "--rm", container, DEBIAN_BASE, what="committing the Debian base")
    except BaseException:
        _buildah("rm", container, what="buildah rm", check=False)
        raise
    return DEBIAN_BASE


def _choose_base(base: str) -> str:
    if base == "debian":
        return _debian_base()
    wanted = project.qualified(project.dockerfile_base() if base == "auto" else base)
    if _has_image(wanted):
        return wanted
    pulled = _buildah("pull", wanted, what=f"pulling {wanted}", check=False)
    if pulled.returncode == 0:
        return wanted
    if base != "auto":
        raise ImageBuildError(f"cannot pull the base {wanted}: {pulled.stderr.strip()[-200:]}")
    _log(f"{wanted} cannot be pulled (no registry reachable); using a local Debian base")
    return _debian_base()


_HOST_CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")


def _trust_volumes() -> list[str]:
    """Build-time-only mounts: the host's CA bundle, and pip/uv told to use it.

    Machines behind a TLS-inspecting egress proxy trust its CA through the
    system bundle; pip (its own certifi) and uv (its own roots) would not. The
    mounts exist during RUN steps only and never land in a layer, so the image
    is what `docker build` makes elsewhere.
    """
    if not _HOST_CA_BUNDLE.is_file():
        return []
    conf = _storage() / "trust"
    conf.mkdir(parents=True, exist_ok=True)
    (conf / "pip.conf").write_text(f"[global]\ncert = {_HOST_CA_BUNDLE}\n")
    (conf / "uv.toml").write_text("native-tls = true\n")
    return [
        "--volume",
        f"{_HOST_CA_BUNDLE}:{_HOST_CA_BUNDLE}:ro",
        "--volume",
        f"{conf / 'pip.conf'}:/etc/pip.conf:ro",
        "--volume",
        f"{conf / 'uv.toml'}:/etc/uv/uv.toml:ro",
    ]


_PRUNE_ABOVE_IMAGES = 40


def _prune_when_large() -> None:
    # vfs stores every layer as a full copy and --layers keeps the
    # intermediate images of each build (the warm-build cache): drop the
    # untagged ones once there are many, at the cost of one cold build.
    listed = _buildah("images", "--all", "--quiet", what="buildah images", check=False)
    count = len(listed.stdout.split())
    if count > _PRUNE_ABOVE_IMAGES:
        _log(f"image storage holds {count} images; pruning the untagged ones")
        _buildah("rmi", "--prune", what="pruning untagged images", check=False)


def build_image(
    *,
    out: Path = DEFAULT_ARCHIVE,
    tag: str = IMAGE_TAG,
    base: str = "auto",
    context: Path = REPO_ROOT,
) -> Path:
    """Build context/Dockerfile into a docker-archive at out; returns out."""
    with _lock():
        started = time.monotonic()
        _prune_when_large()
        chosen = _choose_base(base)
        _log(f"building {tag} from {context / 'Dockerfile'} on {chosen}")
        version, revision = project.version(), project.revision(context)
        _buildah(
            "bud",
            "--isolation",
            "chroot",
            "--pull=never",
            "--layers",
            "--network",
            "host",
            *_trust_volumes(),
            "--build-arg",
            f"PYTHON_IMAGE={chosen}",
            "--build-arg",
            f"VERSION={version}",
            "--build-arg",
            f"REVISION={revision}",
            # buildah (1.28) keys its layer cache on a LABEL/ENV line's text,
            # not on the build arguments in it: with every step cached it
            # returns the image of an earlier commit, labels and
            # AKV_ISSUER_COMMIT included. A --label adds a last step that is
            # never cached, so the image is committed with this build's
            # configuration (checked by tests/node/test_node_release.py).
            "--label",
            f"org.opencontainers.image.version={version}",
            "--label",
            f"org.opencontainers.image.revision={revision}",
            "--tag",
            tag,
            "--file",
            str(context / "Dockerfile"),
            str(context),
            what="buildah bud",
        )
        out.parent.mkdir(parents=True, exist_ok=True)
        partial = out.with_name(f".{out.name}.partial")
        partial.unlink(missing_ok=True)
        _buildah(
            "push", "--quiet", tag, f"docker-archive:{partial}:{tag}", what="writing the archive"
        )
        partial.replace(out)
        size = out.stat().st_size / 1e6
        _log(f"built {tag} in {time.monotonic() - started:.0f}s ({size:.0f} MB archive)")
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m akv_devcluster.dockerfile")
    parser.add_argument(
        "--base",
        default="auto",
        help="auto (the Dockerfile's default, else a local Debian base), debian, or an image",
    )
    parser.add_argument("--out", type=Path, default=DEFAULT_ARCHIVE)
    parser.add_argument("--tag", default=IMAGE_TAG)
    args = parser.parse_args(argv)
    try:
        archive = build_image(out=args.out.resolve(), tag=args.tag, base=args.base)
    except ImageBuildError as exc:
        print(f"make image: error: {exc}", file=sys.stderr)
        return 1
    print(archive)
    return 0


if __name__ == "__main__":
    sys.exit(main())
