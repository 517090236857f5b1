"""Build or locate the upstream binaries the local control plane needs.

kube-apiserver, kubectl and etcd are compiled from Go modules (the only
upstream source reachable from the project's machines) by the wrapper modules
under ``hack/``, and cached per version under the user's cache folder. When
``KUBEBUILDER_ASSETS`` names a folder holding ``etcd`` and ``kube-apiserver``
(the envtest layout real users already have), those are used and nothing is
built. cert-manager's CRDs are read from its Go module after ``go mod download``.

The support matrix (:data:`MATRIX`) has the newest and the oldest Kubernetes +
cert-manager pair the project supports (the two :data:`TESTED` points, which
``ensure`` builds and ``make test`` runs) and the previous Kubernetes minor
(buildable on demand); ``AKV_MATRIX`` (``newest``, the default, ``previous`` or
``oldest``) selects which kube-apiserver, kubectl, cert-manager controller and
CRDs :func:`locate` and the dev cluster use. The points other than the newest
are built from the same wrappers with an alternate go.mod
(``go build -modfile=go.<version>.mod``).

Usage: ``python -m akv_devcluster.binaries ensure|gen-gomod|crds``.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

KUBERNETES_VERSION = "v1.37.2"
# cert-manager v1.21.1 is built against k8s.io 0.36.x: its client talks to the
# 1.37 API server above within client-go's one-minor skew (and to 1.36.3, the
# `previous` matrix point, natively).
CERT_MANAGER_VERSION = "v1.21.1"
ETCD_VERSION = "v3.6.16"
# helm only renders and lints the chart under deploy/ (tests/deploy).
HELM_VERSION = "v3.22.0"
# trust-manager (Bundle controller) for the trust-bundle end-to-end test. The
# module proxy serves only v0.25.0; it is built against k8s.io 0.37, the
# minor of the API server above. It is its
# own wrapper module, so its k8s.io 0.37 does not meet cert-manager's 0.36.
TRUST_MANAGER_VERSION = "v0.25.0"

KUBERNETES_MODULE = "k8s.io/kubernetes"
ETCD_MODULE = "go.etcd.io/etcd/server/v3"
CERT_MANAGER_MODULE = "github.com/cert-manager/cert-manager"
TRUST_MANAGER_MODULE = "github.com/cert-manager/trust-manager"
# zlint, one of the two certificate/CRL linters of tests/lint (docs/linting.md).
ZLINT_VERSION = "v3.7.3"
ZLINT_MODULE = "github.com/zmap/zlint/v3"

# The repository root is three levels up (tools/src/akv_devcluster/): the dev tools
# run from a checkout (an editable workspace install), never from a built wheel.
HACK_DIR = Path(__file__).resolve().parents[3] / "hack"


class BinariesError(Exception):
    """A build or lookup failed; the message is one line meant for the user."""


@dataclass(frozen=True)
class GoBinary:
    """One executable built from a wrapper module under hack/."""

    name: str
    version: str
    module_dir: str
    package: str
    version_vars: tuple[tuple[str, str], ...] = ()
    # Built with `go test -c` (a package whose code is only _test.go files,
    # e.g. Ginkgo specs) instead of `go build`.
    test_binary: bool = False
    # An alternate go.mod in source_dir (`go build -modfile=...`; its go.sum
    # is the same name with .sum): another version from the same wrapper.
    modfile: str = ""
    tags: tuple[str, ...] = ()

    @property
    def source_dir(self) -> Path:
        return HACK_DIR / self.module_dir

    def ldflags(self) -> str:
        flags = ["-s", "-w"]
        flags += [f"-X {var}={value}" for var, value in self.version_vars]
        return " ".join(flags)


def _kube_version_vars(version: str) -> tuple[tuple[str, str], ...]:
    # Without these the binaries report v0.0.0-master, which makes kubectl warn
    # about version skew and hides which server a test talked to.
    major, minor, _ = version.lstrip("v").split(".")
    pairs: list[tuple[str, str]] = []
    for pkg in ("k8s.io/component-base/version", "k8s.io/client-go/pkg/version"):
        pairs += [
            (f"{pkg}.gitVersion", version),
            (f"{pkg}.gitMajor", major),
            (f"{pkg}.gitMinor", minor),
            (f"{pkg}.gitTreeState", "clean"),
        ]
    return tuple(pairs)


def _modfile(version: str, newest: str) -> str:
    """hack/<wrapper>/go.mod pins the newest version; others have go.<version>.mod."""
    return "" if version == newest else f"go.{version}.mod"


def kube_apiserver_binary(version: str) -> GoBinary:
    return GoBinary(
        "kube-apiserver",
        version,
        "kube-apiserver",
        ".",
        _kube_version_vars(version),
        modfile=_modfile(version, KUBERNETES_VERSION),
    )


def kubectl_binary(version: str) -> GoBinary:
    return GoBinary(
        "kubectl",
        version,
        "kube-apiserver",
        "./cmd/kubectl",
        _kube_version_vars(version),
        modfile=_modfile(version, KUBERNETES_VERSION),
    )


KUBE_APISERVER = kube_apiserver_binary(KUBERNETES_VERSION)
KUBECTL = kubectl_binary(KUBERNETES_VERSION)
ETCD = GoBinary("etcd", ETCD_VERSION, "etcd", ".")


def _kube_node_binary(name: str) -> GoBinary:
    return GoBinary(
        name,
        KUBERNETES_VERSION,
        "kube-node",
        f"./cmd/{name}",
        _kube_version_vars(KUBERNETES_VERSION),
    )


# The node of `akv-devcluster up --node` (akv_devcluster.node): one wrapper
# module, hack/kube-node, with the same k8s.io/kubernetes and staging
# replacements as hack/kube-apiserver (its go.mod adds the kubelet's extra
# modules: cadvisor, containerd/api, ttrpc, ...). Built only when a node is asked for.
KUBELET = _kube_node_binary("kubelet")
KUBE_PROXY = _kube_node_binary("kube-proxy")
KUBE_SCHEDULER = _kube_node_binary("kube-scheduler")
KUBE_CONTROLLER_MANAGER = _kube_node_binary("kube-controller-manager")
NODE_BINARIES = (KUBE_CONTROLLER_MANAGER, KUBE_SCHEDULER, KUBE_PROXY, KUBELET)
HELM = GoBinary(
    "helm",
    HELM_VERSION,
    "helm",
    "helm.sh/helm/v3/cmd/helm",
    (
        ("helm.sh/helm/v3/internal/version.version", HELM_VERSION),
        ("helm.sh/helm/v3/internal/version.gitTreeState", "clean"),
        # Helm's default .Capabilities.KubeVersion, from its k8s.io modules (0.37).
        ("helm.sh/helm/v3/pkg/chartutil.k8sVersionMajor", "1"),
        ("helm.sh/helm/v3/pkg/chartutil.k8sVersionMinor", "37"),
        ("helm.sh/helm/v3/pkg/lint/rules.k8sVersionMajor", "1"),
        ("helm.sh/helm/v3/pkg/lint/rules.k8sVersionMinor", "37"),
    ),
)


# cert-manager's controller, from our own main over cert-manager's exported
# packages (the upstream controller-binary module is not served by the proxy);
# see hack/cert-manager/main.go and akv_devcluster.certmanager.
def cert_manager_controller_binary(version: str) -> GoBinary:
    # Older cert-manager packages lack a few options main.go sets; the files
    # that differ carry a build tag named after the version (certmanager_v1_19).
    major, minor = version.lstrip("v").split(".")[:2]
    old = version != CERT_MANAGER_VERSION
    return GoBinary(
        "cert-manager-controller",
        version,
        "cert-manager",
        ".",
        (("github.com/cert-manager/cert-manager/pkg/util.AppVersion", version),),
        modfile=_modfile(version, CERT_MANAGER_VERSION),
        tags=(f"certmanager_v{major}_{minor}",) if old else (),
    )


CERT_MANAGER_CONTROLLER = cert_manager_controller_binary(CERT_MANAGER_VERSION)

# trust-manager, upstream's own main package (cmd/trust-manager is importable
# from the root module, unlike cert-manager's controller); see
# hack/trust-manager/go.mod and akv_devcluster.trustmanager.
TRUST_MANAGER = GoBinary(
    "trust-manager",
    TRUST_MANAGER_VERSION,
    "trust-manager",
    f"{TRUST_MANAGER_MODULE}/cmd/trust-manager",
)

# cert-manager's webhook and cainjector, from small mains of our own in a
# wrapper module named below cert-manager's module path (the code they wire is
# under cert-manager's internal/; upstream's nested cmd modules are not served);
# see hack/cert-manager-components/go.mod and akv_devcluster.certmanager.
_CERT_MANAGER_VERSION_VARS = (
    ("github.com/cert-manager/cert-manager/pkg/util.AppVersion", CERT_MANAGER_VERSION),
)
CERT_MANAGER_WEBHOOK = GoBinary(
    "cert-manager-webhook",
    CERT_MANAGER_VERSION,
    "cert-manager-components",
    "./webhook",
    _CERT_MANAGER_VERSION_VARS,
)
CERT_MANAGER_CAINJECTOR = GoBinary(
    "cert-manager-cainjector",
    CERT_MANAGER_VERSION,
    "cert-manager-components",
    "./cainjector",
    _CERT_MANAGER_VERSION_VARS,
)

# The Azure Workload Identity mutating webhook (the AKS identity path),
# upstream's own main; its logging dependency monis.app/mlog is refused by the
# proxy and replaced by a stand-in (hack/azure-workload-identity/mlog). See
# akv_devcluster.workloadidentity.
WORKLOAD_IDENTITY_VERSION = "v1.5.1"
WORKLOAD_IDENTITY_MODULE = "github.com/Azure/azure-workload-identity"
WORKLOAD_IDENTITY_WEBHOOK = GoBinary(
    "azure-wi-webhook",
    WORKLOAD_IDENTITY_VERSION,
    "azure-workload-identity",
    f"{WORKLOAD_IDENTITY_MODULE}/cmd/webhook",
    ((f"{WORKLOAD_IDENTITY_MODULE}/pkg/version.BuildVersion", WORKLOAD_IDENTITY_VERSION),),
)

# cert-manager's issuer conformance specs (test/e2e/suite/conformance) as a
# test binary from a wrapper of our own; pinned to the newest cert-manager
# release whose root module still holds test/e2e (later ones moved it to a
# module the proxy does not serve). Run by tests/e2e/test_e2e_conformance.py
# through akv_devcluster.conformance; see hack/cert-manager-conformance.
CONFORMANCE_VERSION = "v1.11.5"
CERT_MANAGER_CONFORMANCE = GoBinary(
    "cert-manager-conformance",
    CONFORMANCE_VERSION,
    "cert-manager-conformance",
    ".",
    test_binary=True,
)

# zlint, upstream's own main package (cmd/zlint) at the version hack/zlint/go.mod
# pins; tests/lint runs it over every certificate and CRL the project makes.
ZLINT = GoBinary(
    "zlint",
    ZLINT_VERSION,
    "zlint",
    f"{ZLINT_MODULE}/cmd/zlint",
    (("main.version", ZLINT_VERSION),),
)

# syft makes the SBOM of the release image (`make release`, CycloneDX JSON):
# it reads both the Debian packages (dpkg status) and the Python distributions
# (the venv's dist-info) of an image archive, which a Python-only tool
# (cyclonedx-py) cannot. Upstream's own main package; tests/node/test_node_release.py needs it.
SYFT_VERSION = "v1.57.2"
SYFT_MODULE = "github.com/anchore/syft"
SYFT = GoBinary(
    "syft",
    SYFT_VERSION,
    "syft",
    f"{SYFT_MODULE}/cmd/syft",
    (("main.version", SYFT_VERSION.lstrip("v")),),
)

ALL_BINARIES = (ETCD, KUBE_APISERVER, KUBECTL)


# --- the support matrix --------------------------------------------------------


@dataclass(frozen=True)
class MatrixPoint:
    """A Kubernetes + cert-manager pair the tests run (docs/e2e.md "Support matrix")."""

    name: str
    kubernetes: str
    cert_manager: str

    @property
    def kube_apiserver(self) -> GoBinary:
        return kube_apiserver_binary(self.kubernetes)

    @property
    def kubectl(self) -> GoBinary:
        return kubectl_binary(self.kubernetes)

    @property
    def cert_manager_controller(self) -> GoBinary:
        return cert_manager_controller_binary(self.cert_manager)


# The newest pair is what everything else is built against. The oldest: the
# oldest k8s.io/kubernetes whose API server takes the dev cluster's v1
# AuthenticationConfiguration (anonymous access limited to the discovery
# paths, GA in 1.34), and cert-manager 1.19 (built against k8s.io 0.34), the
# oldest release still in use that the controller wrapper builds against.
# The previous minor (1.36, the newest point until 1.37) stays buildable with
# AKV_MATRIX=previous but is not part of `make test` (nor of a bare `ensure`).
NEWEST = MatrixPoint("newest", KUBERNETES_VERSION, CERT_MANAGER_VERSION)
PREVIOUS = MatrixPoint("previous", "v1.36.3", CERT_MANAGER_VERSION)
OLDEST = MatrixPoint("oldest", "v1.34.4", "v1.19.5")
MATRIX = {point.name: point for point in (NEWEST, PREVIOUS, OLDEST)}
# The points `make test` runs and `ensure` (no names) builds.
TESTED = (NEWEST, OLDEST)
MATRIX_ENV = "AKV_MATRIX"


def matrix_point() -> MatrixPoint:
    """The point ``AKV_MATRIX`` selects (default: the newest)."""
    name = os.environ.get(MATRIX_ENV, "").strip() or NEWEST.name
    point = MATRIX.get(name)
    if point is None:
        raise BinariesError(f"{MATRIX_ENV}={name!r} is not one of {', '.join(MATRIX)}")
    return point


@dataclass(frozen=True)
class Binaries:
    """Where the control-plane executables and cert-manager's CRDs are."""

    etcd: Path
    kube_apiserver: Path
    kubectl: Path | None
    crd_dir: Path | None = None

    def crd_files(self) -> list[Path]:
        if self.crd_dir is None:
            raise BinariesError("cert-manager CRDs were not located")
        return sorted(self.crd_dir.glob("*.yaml"))


def cache_root() -> Path:
    override = os.environ.get("AKV_ISSUER_CACHE_DIR")
    if override:
        return Path(override)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "azure-keyvault-issuer"


def _log(message: str) -> None:
    print(f"[binaries] {message}", file=sys.stderr, flush=True)


def _go() -> str:
    go = shutil.which("go")
    if go is None:
        for candidate in ("/usr/local/go/bin/go", "/usr/lib/go/bin/go"):
            if Path(candidate).is_file():
                return candidate
        raise BinariesError(
            "the Go toolchain is needed to build kube-apiserver/etcd/kubectl "
            "but `go` is not on PATH (or set KUBEBUILDER_ASSETS)"
        )
    return go


def _go_env() -> dict[str, str]:
    env = dict(os.environ)
    # Static binaries need no C toolchain and match upstream release builds.
    env.setdefault("CGO_ENABLED", "0")
    env["GOFLAGS"] = (env.get("GOFLAGS", "") + " -trimpath").strip()
    return env


def _run_go(args: list[str], cwd: Path, *, what: str) -> str:
    proc = subprocess.run(
        [_go(), *args],
        cwd=cwd,
        env=_go_env(),
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        tail = proc.stderr.strip().splitlines()[-5:]
        raise BinariesError(f"{what} failed: {' | '.join(tail) or f'exit {proc.returncode}'}")
    return proc.stdout


def download_module(module: str, version: str) -> dict[str, str]:
    """`go mod download` one module version; returns go's JSON description."""
    with tempfile.TemporaryDirectory(prefix="akv-gomod-") as tmp:
        # Outside any module, so the download does not touch hack/*/go.mod.
        out = _run_go(
            ["mod", "download", "-json", f"{module}@{version}"],
            Path(tmp),
            what=f"go mod download {module}@{version}",
        )
    info: dict[str, str] = json.loads(out)
    if info.get("Error"):
        raise BinariesError(f"go mod download {module}@{version}: {info['Error']}")
    return info


# --- go.mod generation -------------------------------------------------------

_REPLACE_STAGING = re.compile(r"^\s*(k8s\.io/[\w.-]+)\s+=>\s+\./staging/src/\1\s*$")
_GO_DIRECTIVE = re.compile(r"^go\s+(\S+)\s*$", re.MULTILINE)
_GODEBUG = re.compile(r"^godebug\s+.*$", re.MULTILINE)


def staging_replacements(upstream_gomod: str, kube_version: str) -> list[tuple[str, str]]:
    """Map every staging module of k8s.io/kubernetes to its published version.

    Upstream requires its staging modules at v0.0.0 and points them at
    ./staging/src; a consumer must replace each with the published v0.MINOR.PATCH.
    """
    major, minor, patch = kube_version.lstrip("v").split(".")
    if major != "1":
        raise BinariesError(f"unexpected Kubernetes version {kube_version}")
    staging_version = f"v0.{minor}.{patch}"
    modules = sorted(
        {m.group(1) for line in upstream_gomod.splitlines() if (m := _REPLACE_STAGING.match(line))}
    )
    if not modules:
        raise BinariesError("no staging replace lines found in the upstream go.mod")
    return [(module, staging_version) for module in modules]


def _module_header(name: str, upstream_gomod: str) -> str:
    go_line = _GO_DIRECTIVE.search(upstream_gomod)
    lines = [
        "// Code generated by `python -m akv_devcluster.binaries gen-gomod`. DO NOT EDIT.",
        "",
        f"module azure-keyvault-issuer/hack/{name}",
        "",
        f"go {go_line.group(1) if go_line else '1.24'}",
        "",
    ]
    godebug = _GODEBUG.search(upstream_gomod)
    if godebug:
        lines += [godebug.group(0), ""]
    return "\n".join(lines)


def render_kube_gomod(upstream_gomod: str, kube_version: str, name: str = "kube-apiserver") -> str:
    out = _module_header(name, upstream_gomod)
    out += f"require {KUBERNETES_MODULE} {kube_version}\n\nreplace (\n"
    for module, version in staging_replacements(upstream_gomod, kube_version):
        out += f"\t{module} => {module} {version}\n"
    return out + ")\n"


def render_etcd_gomod(upstream_gomod: str, etcd_version: str) -> str:
    return _module_header("etcd", upstream_gomod) + f"require {ETCD_MODULE} {etcd_version}\n"


def _read_gomod(info: dict[str, str]) -> str:
    return Path(info["GoMod"]).read_text()


def generate_gomods() -> None:
    """Regenerate hack/*/go.mod and go.sum from the pinned upstream versions."""
    kube = download_module(KUBERNETES_MODULE, KUBERNETES_VERSION)
    etcd = download_module(ETCD_MODULE, ETCD_VERSION)
    targets = [
        (
            HACK_DIR / "kube-apiserver",
            "go.mod",
            render_kube_gomod(_read_gomod(kube), KUBERNETES_VERSION),
        ),
        *(
            (
                HACK_DIR / "kube-apiserver",
                point.kube_apiserver.modfile,
                render_kube_gomod(
                    _read_gomod(download_module(KUBERNETES_MODULE, point.kubernetes)),
                    point.kubernetes,
                ),
            )
            for point in (PREVIOUS, OLDEST)
        ),
        (
            HACK_DIR / "kube-node",
            "go.mod",
            render_kube_gomod(_read_gomod(kube), KUBERNETES_VERSION, "kube-node"),
        ),
        (HACK_DIR / "etcd", "go.mod", render_etcd_gomod(_read_gomod(etcd), ETCD_VERSION)),
    ]
    for directory, name, gomod in targets:
        (directory / name).write_text(gomod)
        (directory / (name.removesuffix(".mod") + ".sum")).unlink(missing_ok=True)
        _log(f"go mod tidy in {directory} for {name} (downloads the module graph)")
        flags = [] if name == "go.mod" else [f"-modfile={name}"]
        _run_go(["mod", "tidy", *flags], directory, what=f"go mod tidy in {directory.name}")
        _log(f"wrote {directory / name} and its go.sum")


def _required_version(gomod: Path, module: str) -> str | None:
    match = re.search(rf"^\s*(?:require\s+)?{re.escape(module)}\s+(\S+)", gomod.read_text(), re.M)
    return match.group(1) if match else None


def check_gomods() -> None:
    """Fail clearly when a committed go.mod no longer matches the pinned version."""
    for directory, name, module, version in (
        (HACK_DIR / "kube-apiserver", "go.mod", KUBERNETES_MODULE, KUBERNETES_VERSION),
        *(
            (
                HACK_DIR / "kube-apiserver",
                point.kube_apiserver.modfile,
                KUBERNETES_MODULE,
                point.kubernetes,
            )
            for point in (PREVIOUS, OLDEST)
        ),
        (HACK_DIR / "kube-node", "go.mod", KUBERNETES_MODULE, KUBERNETES_VERSION),
        (HACK_DIR / "etcd", "go.mod", ETCD_MODULE, ETCD_VERSION),
    ):
        gomod = directory / name
        if not gomod.is_file():
            raise BinariesError(
                f"{gomod} is missing (the hack/ wrapper modules ship with the repo)"
            )
        found = _required_version(gomod, module)
        if found != version:
            raise BinariesError(
                f"{gomod} pins {module} {found}, expected {version}; run "
                "`python -m akv_devcluster.binaries gen-gomod`"
            )


# --- building ----------------------------------------------------------------


def _inputs_digest(binary: GoBinary) -> str:
    # Rebuild when the wrapper sources, the module graph or the flags change;
    # the Go toolchain version is deliberately left out so a toolchain update
    # does not cost a multi-minute rebuild of an identical program.
    digest = hashlib.sha256()
    digest.update(binary.ldflags().encode())
    digest.update(binary.package.encode())
    if binary.test_binary:
        digest.update(b"go test -c")
    modules = ("go.mod", "go.sum")
    if binary.modfile:
        digest.update(f"-modfile={binary.modfile}".encode())
        modules = (binary.modfile, binary.modfile.removesuffix(".mod") + ".sum")
    if binary.tags:
        digest.update(f"-tags={','.join(binary.tags)}".encode())
    for path in sorted(binary.source_dir.rglob("*")):
        if path.is_file() and (path.suffix == ".go" or path.name in modules):
            digest.update(str(path.relative_to(binary.source_dir)).encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()


def binary_path(binary: GoBinary) -> Path:
    return cache_root() / f"{binary.name}-{binary.version}" / binary.name


@contextlib.contextmanager
def file_lock(path: Path, waiting: str) -> Iterator[None]:
    """Hold an exclusive flock on path (created); log waiting if another holds it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            print(waiting, file=sys.stderr, flush=True)
            fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _build_lock() -> contextlib.AbstractContextManager[None]:
    return file_lock(
        cache_root() / ".build.lock",
        "[binaries] another build holds the cache lock; waiting for it",
    )


def _is_fresh(binary: GoBinary) -> bool:
    target = binary_path(binary)
    stamp = target.with_name(".inputs-sha256")
    return (
        target.is_file() and stamp.is_file() and stamp.read_text().strip() == _inputs_digest(binary)
    )


def is_built(binary: GoBinary) -> bool:
    """True when the cached binary matches its wrapper's sources (no build needed)."""
    return _is_fresh(binary)


_warned_cold = False


def _build(binary: GoBinary) -> Path:
    target = binary_path(binary)
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f".{binary.name}.partial")
    _log(f"building {binary.name} {binary.version} from Go modules into {target.parent}")
    global _warned_cold
    if not _warned_cold:
        _warned_cold = True
        _log(
            "  a cold build downloads the module graph (~1 GB) and compiles: about 7 min "
            "for all three on 2 cores, ~2 GB of RAM; later runs reuse the cache"
        )
    started = time.monotonic()
    # `go test -c` takes the build flags too; its -v would be a test flag.
    cmd = [
        _go(),
        *(["test", "-c"] if binary.test_binary else ["build", "-v"]),
        "-mod=readonly",
        *([f"-modfile={binary.modfile}"] if binary.modfile else []),
        *([f"-tags={','.join(binary.tags)}"] if binary.tags else []),
        "-ldflags",
        binary.ldflags(),
        "-o",
        str(partial),
        binary.package,
    ]
    proc = subprocess.Popen(
        cmd,
        cwd=binary.source_dir,
        env=_go_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stderr is not None
    compiled = 0
    last_report = started
    tail: list[str] = []
    for line in proc.stderr:
        line = line.rstrip()
        tail = [*tail[-9:], line]
        if line.startswith("go: downloading"):
            continue
        compiled += 1
        now = time.monotonic()
        if now - last_report >= 20:
            last_report = now
            _log(f"  {binary.name}: {compiled} packages compiled, {now - started:.0f}s elapsed")
    code = proc.wait()
    if code != 0:
        partial.unlink(missing_ok=True)
        errors = [t for t in tail if t and not t.startswith("go: downloading")][-3:]
        raise BinariesError(f"go build {binary.name} failed (exit {code}): {' | '.join(errors)}")
    partial.replace(target)
    target.with_name(".inputs-sha256").write_text(_inputs_digest(binary) + "\n")
    _log(f"built {target} in {time.monotonic() - started:.0f}s")
    return target


def ensure_binary(binary: GoBinary) -> Path:
    if _is_fresh(binary):
        return binary_path(binary)
    with _build_lock():
        # Another process may have finished the same build while we waited.
        if _is_fresh(binary):
            return binary_path(binary)
        return _build(binary)


def _from_kubebuilder_assets() -> Binaries | None:
    assets = os.environ.get("KUBEBUILDER_ASSETS")
    if not assets:
        return None
    folder = Path(assets)
    etcd, apiserver, kubectl = (folder / n for n in ("etcd", "kube-apiserver", "kubectl"))
    if not (etcd.is_file() and apiserver.is_file()):
        raise BinariesError(
            f"KUBEBUILDER_ASSETS={assets} does not hold both etcd and kube-apiserver"
        )
    if not kubectl.is_file():
        on_path = shutil.which("kubectl")
        kubectl = Path(on_path) if on_path else None  # type: ignore[assignment]
    return Binaries(etcd=etcd, kube_apiserver=apiserver, kubectl=kubectl)


def cert_manager_crd_dir(version: str | None = None) -> Path:
    """deploy/crds of the cert-manager module (default: the AKV_MATRIX point's)."""
    info = download_module(CERT_MANAGER_MODULE, version or matrix_point().cert_manager)
    crds = Path(info["Dir"]) / "deploy" / "crds"
    if not any(crds.glob("*.yaml")):
        raise BinariesError(f"no CRDs found under {crds}")
    return crds


def locate(*, build: bool = True) -> Binaries:
    """Return the binaries, building missing ones unless build is False."""
    found = _from_kubebuilder_assets()
    if found is None:
        paths: dict[str, Path] = {}
        if build:
            check_gomods()
        point = matrix_point()
        for binary in (ETCD, point.kube_apiserver, point.kubectl):
            if build:
                paths[binary.name] = ensure_binary(binary)
            elif _is_fresh(binary):
                paths[binary.name] = binary_path(binary)
            else:
                raise BinariesError(
                    f"{binary.name} {binary.version} is not built yet; run `make binaries`"
                )
        found = Binaries(paths["etcd"], paths["kube-apiserver"], paths["kubectl"])
    return Binaries(found.etcd, found.kube_apiserver, found.kubectl, cert_manager_crd_dir())


def _ensure_only(names: list[str]) -> int:
    point = matrix_point()
    known = {
        b.name: b
        for b in (
            ETCD,
            point.kube_apiserver,
            point.kubectl,
            HELM,
            point.cert_manager_controller,
            TRUST_MANAGER,
            *NODE_BINARIES,
            CERT_MANAGER_WEBHOOK,
            CERT_MANAGER_CAINJECTOR,
            WORKLOAD_IDENTITY_WEBHOOK,
            CERT_MANAGER_CONFORMANCE,
            ZLINT,
            SYFT,
        )
    }
    unknown = [n for n in names if n not in known]
    if unknown:
        print(
            f"error: unknown binaries {', '.join(unknown)} (known: {', '.join(known)})",
            file=sys.stderr,
        )
        return 2
    if any(known[n].module_dir in ("kube-apiserver", "etcd", "kube-node") for n in names):
        check_gomods()
    for name in names:
        print(f"{name:<15} {ensure_binary(known[name])}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m akv_devcluster.binaries")
    sub = parser.add_subparsers(dest="command", required=True)
    ensure = sub.add_parser("ensure", help="build or reuse every upstream binary; fetch CRDs")
    ensure.add_argument(
        "names",
        nargs="*",
        help="only these (e.g. `etcd kube-apiserver kubectl` for `make demo`); default: all",
    )
    sub.add_parser("gen-gomod", help="regenerate hack/*/go.mod and go.sum")
    sub.add_parser("crds", help="print the folder holding cert-manager's CRDs")
    args = parser.parse_args(argv)
    try:
        if args.command == "gen-gomod":
            generate_gomods()
        elif args.command == "crds":
            print(cert_manager_crd_dir())
        elif args.names:
            return _ensure_only(args.names)
        else:
            found = locate(build=True)
            print(f"etcd            {found.etcd}")
            print(f"kube-apiserver  {found.kube_apiserver}")
            print(f"kubectl         {found.kubectl or '(not found)'}")
            print(f"cert-manager CRDs {found.crd_dir}")
            print(f"helm            {ensure_binary(HELM)}")
            print(f"cert-manager    {ensure_binary(matrix_point().cert_manager_controller)}")
            print(f"trust-manager   {ensure_binary(TRUST_MANAGER)}")
            for binary in NODE_BINARIES:
                print(f"{binary.name:<15} {ensure_binary(binary)}")
            print(f"cm-webhook      {ensure_binary(CERT_MANAGER_WEBHOOK)}")
            print(f"cm-cainjector   {ensure_binary(CERT_MANAGER_CAINJECTOR)}")
            print(f"azure-wi-webhook {ensure_binary(WORKLOAD_IDENTITY_WEBHOOK)}")
            print(f"cm-conformance  {ensure_binary(CERT_MANAGER_CONFORMANCE)}")
            print(f"zlint           {ensure_binary(ZLINT)}")
            print(f"syft            {ensure_binary(SYFT)}")
            # The rest of the tested support matrix: what its e2e run needs
            # beyond the binaries above (docs/e2e.md "Support matrix").
            for other in TESTED:
                if other == matrix_point():
                    continue
                for binary in (other.kube_apiserver, other.kubectl, other.cert_manager_controller):
                    print(f"{binary.name + ' ' + binary.version:<15} {ensure_binary(binary)}")
                print(f"cert-manager CRDs {cert_manager_crd_dir(other.cert_manager)}")
    except BinariesError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
