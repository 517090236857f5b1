"""``make release``: every artefact of one version in one folder, with checksums.

Into ``dist/release/`` (``--out``), all named with pyproject.toml's version V:

- ``azure_keyvault_issuer-V-py3-none-any.whl`` and ``azure_keyvault_issuer-V.tar.gz``
  (``uv build``: the production package only, with LICENSE and NOTICE);
- ``azure-keyvault-issuer-V.tgz`` (``helm package`` of deploy/charts/, whose
  Chart.yaml must already say version V and appVersion V);
- ``azure-keyvault-issuer-V-image.tar``: the Dockerfile's image as a
  docker-archive tagged ``azure-keyvault-issuer:V`` (the chart's default image
  reference), built as ``make image`` builds it (akv_devcluster.dockerfile),
  labels ``org.opencontainers.image.version=V`` and ``.revision=<commit>``;
- ``azure-keyvault-issuer-V-image.cdx.json``: the image's SBOM, CycloneDX
  JSON written by syft (the pinned Go module, hack/syft): the Debian packages
  (dpkg database) and the Python distributions (the venv's .dist-info) the
  image holds;
- ``SHA256SUMS`` of all of them (``sha256sum -c SHA256SUMS`` checks them).

The commit is the checkout's HEAD, ``-dirty`` when tracked files changed; tag
the release commit first (CONTRIBUTING.md "Releasing"). A mismatch (a chart
not at V, an artefact named otherwise) is a one-line error, and exit 1.

CLI: ``python -m akv_devcluster.release [--out DIR]``; the last line printed is
the folder. Python API: ``make_release(out) -> Release``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tarfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from akv_devcluster import binaries, dockerfile, project

DEFAULT_OUT = project.REPO_ROOT / "dist" / "release"
CHECKSUMS = "SHA256SUMS"
IN_PROGRESS = ".release-in-progress"  # removed once SHA256SUMS is written
UV_VERSION = "0.13.9"  # as in the Makefile


class ReleaseError(Exception):
    """A release step failed; one-line message."""


@dataclass
class Release:
    folder: Path
    version: str
    revision: str
    wheel: Path
    sdist: Path
    chart: Path
    image: Path
    sbom: Path
    checksums: Path
    seconds: dict[str, float] = field(default_factory=dict)

    def artefacts(self) -> list[Path]:
        return [self.wheel, self.sdist, self.chart, self.image, self.sbom]


def _log(message: str) -> None:
    print(f"[release] {message}", file=sys.stderr, flush=True)


def _run(args: list[str], *, what: str, cwd: Path = project.REPO_ROOT, timeout: float = 900) -> str:
    env = {**os.environ, "SYFT_CHECK_FOR_APP_UPDATE": "false"}
    proc = subprocess.run(
        args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )
    if proc.returncode != 0:
        lines = [line for line in proc.stderr.strip().splitlines() if line.strip()]
        raise ReleaseError(f"{what} failed: {' | '.join(lines[-3:]) or f'exit {proc.returncode}'}")
    return proc.stdout


def _uv() -> str:
    candidate = os.environ.get("UV") or str(binaries.cache_root() / f"uv-{UV_VERSION}/bin/uv")
    if Path(candidate).is_file():
        return candidate
    found = shutil.which("uv")
    if found is None:
        raise ReleaseError(f"uv is missing ({candidate}); run `make venv`")
    return found


def _prepare(out: Path) -> None:
    # Only a folder this command made (a finished release holds SHA256SUMS, an
    # interrupted one the marker) or an empty one is emptied: never a user's
    # folder given by mistake.
    if out.exists():
        ours = (out / CHECKSUMS).is_file() or (out / IN_PROGRESS).is_file()
        if any(out.iterdir()) and not ours:
            raise ReleaseError(f"{out} is not empty and holds no {CHECKSUMS}; choose another --out")
        shutil.rmtree(out)
    out.mkdir(parents=True)
    (out / IN_PROGRESS).touch()


def _one(out: Path, pattern: str, what: str) -> Path:
    found = sorted(out.glob(pattern))
    if len(found) != 1:
        names = ", ".join(p.name for p in out.iterdir())
        raise ReleaseError(f"{what}: expected one {pattern} in {out}, found: {names or 'nothing'}")
    return found[0]


def check_chart(version: str) -> None:
    chart = yaml.safe_load((project.CHART_DIR / "Chart.yaml").read_text())
    found = (str(chart.get("version")), str(chart.get("appVersion")))
    if found != (version, version):
        raise ReleaseError(
            f"Chart.yaml has version {found[0]} and appVersion {found[1]}; pyproject.toml "
            f"says {version}: set both to it (docs/versioning.md)"
        )


def build_python(out: Path, version: str) -> tuple[Path, Path]:
    _run([_uv(), "build", "--sdist", "--wheel", "--out-dir", str(out)], what="uv build")
    wheel = _one(out, f"azure_keyvault_issuer-{version}-*.whl", "uv build")
    sdist = _one(out, f"azure_keyvault_issuer-{version}.tar.gz", "uv build")
    # uv build leaves a .gitignore in its output folder; not an artefact.
    (out / ".gitignore").unlink(missing_ok=True)
    return wheel, sdist


def build_chart(out: Path, version: str) -> Path:
    helm = binaries.ensure_binary(binaries.HELM)
    _run(
        [str(helm), "package", str(project.CHART_DIR), "--destination", str(out)],
        what="helm package",
    )
    return _one(out, f"{project.NAME}-{version}.tgz", "helm package")


def image_labels(archive: Path) -> dict[str, str]:
    """The OCI labels of a docker-archive's (only) image."""
    with tarfile.open(archive) as tar:
        manifest = json.load(tar.extractfile("manifest.json"))  # type: ignore[arg-type]
        config = json.load(tar.extractfile(manifest[0]["Config"]))  # type: ignore[arg-type]
    labels: dict[str, str] = config.get("config", {}).get("Labels") or {}
    return labels


def build_image(out: Path, version: str) -> Path:
    archive = out / f"{project.NAME}-{version}-image.tar"
    try:
        dockerfile.build_image(out=archive, tag=f"{project.NAME}:{version}")
    except dockerfile.ImageBuildError as exc:
        raise ReleaseError(f"image: {exc}") from None
    label = image_labels(archive).get("org.opencontainers.image.version")
    if label != version:
        raise ReleaseError(f"the image is labelled version {label}, not {version}")
    return archive


def build_sbom(out: Path, image: Path, version: str) -> Path:
    syft = binaries.ensure_binary(binaries.SYFT)
    sbom = out / f"{project.NAME}-{version}-image.cdx.json"
    _run(
        [
            str(syft),
            "scan",
            f"docker-archive:{image}",
            "--quiet",
            "--source-name",
            project.NAME,
            "--source-version",
            version,
            "--output",
            f"cyclonedx-json={sbom}",
        ],
        what="syft",
    )
    return sbom


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_checksums(out: Path, files: list[Path]) -> Path:
    lines = [f"{sha256(path)}  {path.name}\n" for path in sorted(files)]
    target = out / CHECKSUMS
    target.write_text("".join(lines))
    return target


def make_release(out: Path = DEFAULT_OUT) -> Release:
    version, revision = project.version(), project.revision()
    _log(f"azure-keyvault-issuer {version} (commit {revision or 'unknown'}) into {out}")
    if revision.endswith("-dirty"):
        _log("the work tree has uncommitted changes; the artefacts say so (-dirty)")
    check_chart(version)
    _prepare(out)
    seconds: dict[str, float] = {}

    def step(name: str, started: float) -> None:
        seconds[name] = time.monotonic() - started
        _log(f"{name}: {seconds[name]:.0f}s")

    started = time.monotonic()
    wheel, sdist = build_python(out, version)
    step("wheel and sdist", started)
    started = time.monotonic()
    chart = build_chart(out, version)
    step("chart", started)
    started = time.monotonic()
    image = build_image(out, version)
    step("image", started)
    started = time.monotonic()
    sbom = build_sbom(out, image, version)
    step("SBOM", started)
    checksums = write_checksums(out, [wheel, sdist, chart, image, sbom])
    (out / IN_PROGRESS).unlink()
    return Release(out, version, revision, wheel, sdist, chart, image, sbom, checksums, seconds)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m akv_devcluster.release")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args(argv)
    started = time.monotonic()
    try:
        release = make_release(args.out.resolve())
    except (ReleaseError, binaries.BinariesError) as exc:
        print(f"make release: error: {exc}", file=sys.stderr)
        return 1
    for path in [*release.artefacts(), release.checksums]:
        print(f"{path.stat().st_size / 1e6:9.2f} MB  {path.name}")
    _log(f"done in {time.monotonic() - started:.0f}s")
    print(release.folder)
    return 0


if __name__ == "__main__":
    sys.exit(main())
