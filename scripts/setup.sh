#!/usr/bin/env bash
# make setup: bring this machine to the state cvbench needs, idempotently.
#
# Every change to the system is printed on a "setup:" line; a run that has
# nothing to do says so and takes a few seconds.  Runs as root because it
# installs Debian packages, starts libvirt and fixes /dev/kvm's mode.
set -euo pipefail
cd "$(dirname "$0")/.."

changed=0
say() { echo "setup: $*"; changed=1; }
die() { echo "cvbench: setup: $*" >&2; exit 2; }

[ "$(id -u)" -eq 0 ] || die "needs root (apt, libvirtd, /dev/kvm); run 'sudo make setup'"
command -v apt-get >/dev/null || die "needs a Debian-like host with apt-get; install the packages listed in README.md by hand"

# hyperfine cross-checks startup; strace counts host syscalls behind a boundary (strength);
# e2fsprogs' mkfs.ext4 -d makes the guests' read-only fio disk (disk scenario);
# golang-github-containers-common ships the default
# seccomp profile (/usr/share/containers/seccomp.json) the image's config.json is made from.
PACKAGES=(qemu-system-x86 qemu-utils libvirt-daemon-system libvirt-clients libvirt-dev
  pkg-config busybox-static cpio gcc libc6-dev crun runc runsc linux-perf libxml2-utils
  iproute2 libseccomp2 python3-venv procps util-linux hyperfine golang-github-containers-common
  iperf3 sockperf fio strace slirp4netns passt e2fsprogs)

# 1. Debian packages.
missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  say "installing Debian packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q >/dev/null
  apt-get install -y -q --no-install-recommends "${missing[@]}" >/tmp/cvbench-apt.log 2>&1 ||
    die "apt-get install failed (log: /tmp/cvbench-apt.log)"
fi

# 2. The Python environment; reinstalled only when pyproject.toml changes.
PY=${PYTHON:-python3}
stamp=.venv/.cvbench-installed
# compat mode puts the repo on sys.path with a plain .pth line: the default
# editable finder imports pathlib and friends at every interpreter start (~10 ms
# here), which every measured `python -m runtime` start would pay.
EDITABLE=compat
want=$(sha256sum pyproject.toml | cut -c1-16)-$EDITABLE
if [ ! -x .venv/bin/python ]; then
  say "creating .venv with $($PY --version 2>&1)"
  "$PY" -m venv .venv || die "python3 -m venv failed; apt-get install python3-venv"
fi
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  say "installing cvbench and its Python dependencies into .venv"
  .venv/bin/pip install -q --disable-pip-version-check -e '.[dev]' \
      --config-settings editable_mode=$EDITABLE >/tmp/cvbench-pip.log 2>&1 ||
    { tail -20 /tmp/cvbench-pip.log >&2; die "pip install failed (log: /tmp/cvbench-pip.log)"; }
  echo "$want" >"$stamp"
fi
# Bytecode for the repo's own packages, as pip writes it for an installed one:
# with PYTHONDONTWRITEBYTECODE set (or a read-only checkout), every measured
# `python -m runtime` start would otherwise compile its modules from source
# (~20 ms).  compileall rewrites only what changed since, so it is quick.
.venv/bin/python -m compileall -q -j 0 runtime common bench vm_backend scenarios analysis >/dev/null ||
  die "python -m compileall failed on the repo's packages"

# 3. libvirt daemons: no systemd here, so start them by hand (no -l: it needs TLS).
if ! pgrep -x virtlogd >/dev/null; then
  say "starting virtlogd"
  virtlogd -d
fi
if ! pgrep -x libvirtd >/dev/null; then
  say "starting libvirtd"
  libvirtd -d
  for _ in $(seq 50); do [ -S /run/libvirt/libvirt-sock ] && break; sleep 0.1; done
  [ -S /run/libvirt/libvirt-sock ] || die "libvirtd did not open /run/libvirt/libvirt-sock; see /var/log/libvirt/libvirtd.log"
fi

# 4. /dev/kvm as udev would leave it, so libvirt's qemu user can open it.
if [ -c /dev/kvm ] && getent group kvm >/dev/null; then
  if [ "$(stat -c %G /dev/kvm)" != kvm ] || [ "$(stat -c %a /dev/kvm)" != 660 ]; then
    say "chgrp kvm /dev/kvm; chmod 0660 /dev/kvm (what udev would do)"
    chgrp kvm /dev/kvm
    chmod 0660 /dev/kvm
  fi
fi

# 5. Guest kernel, probe and image (content-addressed; a no-op when nothing changed).
out=$(.venv/bin/python -m bench image 2>&1) || { echo "$out" >&2; exit 2; }
if grep -q -e '^image: building' -e '^setup: fetching' <<<"$out"; then
  say "built the guest image:"
  echo "$out" | sed 's/^/  /'
fi

# 6. The runtime's C stage for plans without namespaces (content-addressed: a no-op when built).
.venv/bin/python -m runtime.stage >/dev/null || exit 2

[ "$changed" -eq 0 ] && echo "setup: nothing to change"
exit 0
