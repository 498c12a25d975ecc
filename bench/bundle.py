"""The one configuration every container backend reads.

The image's ``config.json`` is what a real engine runs by default: the
``runc spec`` base (runtime.spec.default_spec, the same document), plus the
cgroup namespace, plus the default seccomp profile that Podman applies, taken
from its source, Debian's golang-github-containers-common
(``/usr/share/containers/seccomp.json``, Docker's profile format).  That file
is converted here, once, at image build, to the OCI ``linux.seccomp`` form for
this machine's architecture, resolving each rule's ``includes``/``excludes``
(capabilities, architectures, minimum kernel) against the bundle's bounding
capabilities, the way containers/common's own converter does.  Nothing of the
profile is written by hand.

``--config PATH`` (``make bench CONFIG=PATH``) swaps in a user's config.json
for every container backend alike: the harness writes it, with ``root.path``
pointed at the image's rootfs, into a cvbench bundle folder that builtin,
builtin-cli, crun, runc and runsc all read.
"""
from __future__ import annotations

import hashlib
import json
import os
import platform
from pathlib import Path

from common.errors import CvbError, EnvError
from common.naming import PREFIX
from common.paths import state_dir

SECCOMP_SOURCE = Path("/usr/share/containers/seccomp.json")
SECCOMP_PACKAGE = "golang-github-containers-common"
BUNDLE_ENV = "CVBENCH_BUNDLE"   # a user bundle folder, inherited by pyperf workers

# platform.machine() -> (Go/Docker arch name, libseccomp arch name)
ARCHES = {"x86_64": ("amd64", "SCMP_ARCH_X86_64"), "aarch64": ("arm64", "SCMP_ARCH_AARCH64")}


def _kernel_tuple(release: str) -> tuple[int, ...]:
    nums = []
    for part in release.split("-")[0].split(".")[:2]:
        digits = "".join(c for c in part if c.isdigit())
        nums.append(int(digits or 0))
    return tuple(nums)


def _applies(rule: dict, caps: set[str], arch: str, kernel: tuple[int, ...]) -> bool:
    """containers/common's filter: excludes first, then includes (all must hold)."""
    exc, inc = rule.get("excludes") or {}, rule.get("includes") or {}
    if arch in (exc.get("arches") or []):
        return False
    if any(c in caps for c in exc.get("caps") or []):
        return False
    if exc.get("minKernel") and kernel >= _kernel_tuple(exc["minKernel"]):
        return False
    if inc.get("arches") and arch not in inc["arches"]:
        return False
    if any(c not in caps for c in inc.get("caps") or []):
        return False
    if inc.get("minKernel") and kernel < _kernel_tuple(inc["minKernel"]):
        return False
    return True


def docker_to_oci(profile: dict, caps: list[str], machine: str | None = None,
                  kernel: str | None = None) -> dict:
    """A Docker-format seccomp profile as OCI ``linux.seccomp`` for one machine."""
    machine = machine or platform.machine()
    if machine not in ARCHES:
        raise EnvError("seccomp", f"no seccomp architecture mapping for {machine}",
                       f"cvbench converts {SECCOMP_SOURCE} for {', '.join(ARCHES)} only")
    arch, scmp = ARCHES[machine]
    ktuple = _kernel_tuple(kernel or platform.release())
    arches = [scmp]
    for m in profile.get("archMap") or []:
        if m.get("architecture") == scmp:
            arches += list(m.get("subArchitectures") or [])
    out: dict = {"defaultAction": profile["defaultAction"]}
    if "defaultErrnoRet" in profile:
        out["defaultErrnoRet"] = profile["defaultErrnoRet"]
    out["architectures"] = arches
    if profile.get("flags"):
        out["flags"] = list(profile["flags"])
    rules = []
    for rule in profile.get("syscalls") or []:
        if not _applies(rule, set(caps), arch, ktuple):
            continue
        names = list(rule.get("names") or ([rule["name"]] if rule.get("name") else []))
        r: dict = {"names": names, "action": rule["action"]}
        if rule.get("errnoRet") is not None:
            r["errnoRet"] = rule["errnoRet"]
        if rule.get("args"):
            r["args"] = [{k: a[k] for k in ("index", "value", "valueTwo", "op") if k in a}
                         for a in rule["args"]]
        rules.append(r)
    out["syscalls"] = rules
    return out


def read_seccomp_source(path: Path = SECCOMP_SOURCE) -> dict:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise EnvError("image", f"{path} not found (the default seccomp profile of Podman)",
                       f"apt-get install {SECCOMP_PACKAGE} (make setup does)") from None
    except ValueError as e:
        raise EnvError("image", f"{path} is not JSON ({e})",
                       f"reinstall {SECCOMP_PACKAGE}") from None


def default_config(args: list[str] | None = None) -> dict:
    """runc spec + cgroup namespace + the converted default seccomp profile."""
    from runtime.spec import default_spec
    spec = default_spec(args or ["/probe", "ready"])
    lin = spec.setdefault("linux", {})
    ns = lin.setdefault("namespaces", [])
    if not any(n.get("type") == "cgroup" for n in ns):
        ns.append({"type": "cgroup"})
    caps = spec["process"]["capabilities"]["bounding"]
    lin["seccomp"] = docker_to_oci(read_seccomp_source(), caps)
    return spec


def source_digest() -> bytes:
    """Bytes of the profile source, for the image's content hash."""
    try:
        return SECCOMP_SOURCE.read_bytes()
    except OSError:
        return b""


def describe(spec: dict) -> dict:
    """What a config asks for, in a few words a chart row or a caveat can show."""
    lin = spec.get("linux") or {}
    proc = spec.get("process") or {}
    ns = sorted(n.get("type", "?") for n in lin.get("namespaces") or [])
    sc = lin.get("seccomp")
    caps = sorted((proc.get("capabilities") or {}).get("effective") or [])
    if sc:
        seccomp = (f"seccomp default {sc.get('defaultAction')}, {len(sc.get('syscalls') or [])} rules")
    else:
        seccomp = "no seccomp"
    short = f"{len(ns)} namespaces, {seccomp}, {len(caps)} caps"
    return {"namespaces": ns, "seccomp": seccomp, "capabilities": caps,
            "no_new_privileges": bool(proc.get("noNewPrivileges")),
            "readonly_root": bool((spec.get("root") or {}).get("readonly")), "short": short}


def _bad(path: str, why: str) -> CvbError:
    return CvbError("--config", f"{path}: {why}",
                    "pass an OCI runtime-spec config.json (e.g. one written by 'runc spec')")


def load_user_config(path: str) -> dict:
    """Read and check a user's config.json; exit-2 errors name the file and field."""
    p = Path(path)
    try:
        spec = json.loads(p.read_text())
    except FileNotFoundError:
        raise _bad(path, "no such file") from None
    except IsADirectoryError:
        raise _bad(path, "is a folder, not a config.json") from None
    except (OSError, UnicodeDecodeError) as e:
        raise _bad(path, f"cannot read it ({e})") from None
    except ValueError as e:
        raise _bad(path, f"is not valid JSON ({e})") from None
    if not isinstance(spec, dict):
        raise _bad(path, "the top level must be a JSON object")
    for key, typ in (("ociVersion", str), ("process", dict), ("root", dict)):
        if not isinstance(spec.get(key), typ):
            raise _bad(path, f"field {key!r} is missing or not a{'n object' if typ is dict else ' string'}")
    if "linux" in spec and not isinstance(spec["linux"], dict):
        raise _bad(path, "field 'linux' must be an object")
    for key in ("namespaces",):
        if not isinstance((spec.get("linux") or {}).get(key, []), list):
            raise _bad(path, f"field 'linux.{key}' must be a list")
    return spec


def write_user_bundle(path: str, rootfs: str) -> Path:
    """The user's config.json in a cvbench bundle folder whose root is the image's rootfs.

    Named like the OCI backends' per-run bundles (``cvbench-b<owner pid>-...``),
    so the harness's end-of-run sweep removes it, and a later sweep does if the
    harness was killed."""
    spec = load_user_config(path)
    spec["root"]["path"] = os.path.realpath(rootfs)
    spec["process"]["args"] = ["/probe", "ready"]
    spec["process"]["terminal"] = False
    text = json.dumps(spec, indent=2) + "\n"
    digest = hashlib.sha256(text.encode()).hexdigest()[:12]
    folder = state_dir() / "bench" / "bundles" / f"{PREFIX}-b{os.getpid()}-config-{digest}"
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / ".config.json.tmp"
    tmp.write_text(text)
    os.replace(tmp, folder / "config.json")
    return folder


def active_bundle(image_bundle: str) -> str:
    """The bundle every container backend reads: the user's (--config) or the image's."""
    return os.environ.get(BUNDLE_ENV) or image_bundle
