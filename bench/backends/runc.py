"""runc: the reference OCI runtime, on the image's bundle."""
from __future__ import annotations

from .oci import OCIBackend


class Runc(OCIBackend):
    name = binary = "runc"
