"""The root switch's chroot fallback, exercised where pivot_root really fails:
a caller whose root is a plain directory (it was itself chrooted), as inside
some build sandboxes.  Runs in a forked child with a private mount namespace,
so nothing changes for the test process or the host."""
from __future__ import annotations

import os

from runtime import rootfs
from runtime import syscalls as sc


def test_chroot_fallback_when_pivot_root_is_impossible(root, image, tmp_path):
    (tmp_path / "inner" / "new").mkdir(parents=True)
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            sc.unshare(sc.CLONE_NEWNS)
            sc.mount(None, "/", None, sc.MS_REC | sc.MS_SLAVE)
            sc.mount(image.rootfs, str(tmp_path / "inner" / "new"), None, sc.MS_BIND | sc.MS_REC)
            os.chroot(tmp_path / "inner")  # our root is now not a mount point
            try:
                sc.pivot_root("/new", "/new")
                os.write(w, b"pivot_root worked\n")
            except OSError as e:
                os.write(w, f"pivot_root errno={e.errno}\n".encode())
            rootfs.switch_root("/new")
            os.write(w, f"probe={os.path.exists('/probe')} cwd={os.getcwd()}\n".encode())
        except BaseException as e:  # noqa: BLE001
            os.write(w, f"error {e!r}\n".encode())
        os._exit(0)
    os.close(w)
    with open(r, "rb") as f:
        out = f.read().decode().splitlines()
    os.waitpid(pid, 0)
    assert out == ["pivot_root errno=22", "probe=True cwd=/"], out
