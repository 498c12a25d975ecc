"""Shared fixtures.  Tests use the real image that `make setup` built."""
from __future__ import annotations

import os
import shutil

import pytest

from bench import image as image_mod


@pytest.fixture(scope="session")
def image():
    """The shared guest image (bundle + initramfs + kernel) as built by make setup.

    Containers need no guest kernel, so this does not insist on one; a VM test
    without it fails in vm_backend with an error that says to run make setup."""
    return image_mod.load()


@pytest.fixture(scope="session")
def root():
    if os.geteuid() != 0:
        pytest.skip("needs root: namespaces, cgroups and libvirt's system URI")


def need(binary: str) -> str:
    path = shutil.which(binary)
    if not path:
        pytest.skip(f"{binary} not installed (make setup installs it)")
    return path


def usable(name: str):
    """The named bench backend, or a skip with the reason its available() gives."""
    from bench import backends
    b = backends.get(name)
    ok, why = b.available()
    if not ok:
        pytest.skip(why)
    return b
