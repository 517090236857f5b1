"""Container images without a registry or a Docker daemon.

Nothing can be pulled on the project's machines, so every image a dev-cluster
node runs is made here and imported into the node's containerd with
``akv-devcluster load-image``. Two ways in:

* ``write_image_archive`` packs a few host files (a static binary, a CA file)
  into a one-layer image and writes it as a ``docker save`` archive, the
  format ``ctr images import``, ``docker load`` and ``podman load`` all read.
  It needs no tool besides Python and is deterministic (fixed mtimes and
  owners), so the same inputs give the same image ID. Used for the node's
  sandbox ("pause") image and meant for images of Go-built upstream binaries
  (cert-manager's controller, webhooks): ``files`` maps the path inside the
  image to the host file, e.g. ``{"/cert-manager-controller": path}``, with
  ``entrypoint=["/cert-manager-controller"]`` and ``user="65532:65532"``.
* ``akv_devcluster.dockerfile`` builds a real Dockerfile (the project's own)
  with buildah.

Image names should be fully qualified under ``localhost/`` (as buildah names
local images): containerd would otherwise expand ``name:tag`` to
``docker.io/library/name:tag`` and a Pod's ``image:`` would have to say so.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import tarfile
from collections.abc import Mapping, Sequence
from pathlib import Path

from akv_devcluster.binaries import cache_root

PAUSE_IMAGE = "localhost/akv-devcluster/pause:catatonit"
_CATATONIT = Path("/usr/bin/catatonit")


class ImageError(Exception):
    """An image could not be built or written; one-line message."""


def _layer(files: Mapping[str, Path | bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        directories: set[str] = set()
        for target in sorted(files):
            path = target.strip("/")
            if not path:
                raise ImageError(f"invalid path inside the image: {target!r}")
            parts = path.split("/")
            for depth in range(1, len(parts)):
                folder = "/".join(parts[:depth])
                if folder not in directories:
                    directories.add(folder)
                    info = tarfile.TarInfo(folder)
                    info.type = tarfile.DIRTYPE
                    info.mode = 0o755
                    tar.addfile(info)
            source = files[target]
            if isinstance(source, bytes):
                data, mode = source, 0o644
            else:
                try:
                    data = source.read_bytes()
                except OSError as exc:
                    raise ImageError(f"cannot read {source}: {exc.strerror}") from exc
                mode = 0o755 if os.access(source, os.X_OK) else 0o644
            info = tarfile.TarInfo(path)
            info.size = len(data)
            info.mode = mode
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def write_image_archive(
    archive: Path,
    name: str,
    files: Mapping[str, Path | bytes],
    *,
    entrypoint: Sequence[str],
    cmd: Sequence[str] = (),
    user: str | None = None,
    env: Mapping[str, str] | None = None,
) -> Path:
    """Write a one-layer image holding files as a docker-archive; returns archive.

    name is the full reference (``localhost/<repo>:<tag>``); files maps absolute
    paths inside the image to host files (executables keep their x bit) or bytes.
    """
    if ":" not in name.rsplit("/", 1)[-1]:
        raise ImageError(f"image name {name!r} needs a tag (name:tag)")
    layer = _layer(files)
    layer_digest = hashlib.sha256(layer).hexdigest()
    environment = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}
    environment.update(env or {})
    runtime: dict[str, object] = {
        "Entrypoint": list(entrypoint),
        "Env": [f"{k}={v}" for k, v in environment.items()],
        "WorkingDir": "/",
    }
    if cmd:
        runtime["Cmd"] = list(cmd)
    if user:
        runtime["User"] = user
    config = json.dumps(
        {
            "architecture": "amd64",
            "os": "linux",
            "created": "1970-01-01T00:00:00Z",
            "config": runtime,
            "rootfs": {"type": "layers", "diff_ids": [f"sha256:{layer_digest}"]},
            "history": [{"created": "1970-01-01T00:00:00Z", "created_by": "akv_devcluster.images"}],
        },
        sort_keys=True,
    ).encode()
    config_digest = hashlib.sha256(config).hexdigest()
    manifest = json.dumps(
        [
            {
                "Config": f"{config_digest}.json",
                "RepoTags": [name],
                "Layers": [f"{layer_digest}/layer.tar"],
            }
        ]
    ).encode()
    archive.parent.mkdir(parents=True, exist_ok=True)
    partial = archive.with_name(f".{archive.name}.partial")
    with tarfile.open(partial, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for member, data in (
            (f"{layer_digest}/layer.tar", layer),
            (f"{config_digest}.json", config),
            ("manifest.json", manifest),
        ):
            info = tarfile.TarInfo(member)
            info.size = len(data)
            info.mode = 0o644
            tar.addfile(info, io.BytesIO(data))
    partial.replace(archive)
    return archive


def pause_image_archive() -> Path:
    """The node's sandbox image: Debian's static catatonit in pause mode (-P).

    catatonit is podman's pause/init process; being statically linked it needs
    nothing else in the image. Cached under the user cache, rebuilt only when
    the catatonit binary changes.
    """
    if not _CATATONIT.is_file():
        raise ImageError(f"{_CATATONIT} is missing (run hack/install-node-deps.sh)")
    digest = hashlib.sha256(_CATATONIT.read_bytes()).hexdigest()[:16]
    archive = cache_root() / "images" / f"pause-catatonit-{digest}.tar"
    if not archive.is_file():
        write_image_archive(
            archive,
            PAUSE_IMAGE,
            {"/pause": _CATATONIT},
            entrypoint=["/pause", "-P"],
            user="65535:65535",
        )
    return archive
