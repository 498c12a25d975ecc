"""Domain XML, kernel command line, QEMU argv and memory split: no guest booted."""
from __future__ import annotations

import os
import subprocess
import xml.etree.ElementTree as ET

import pytest
from conftest import need

from common.errors import CvbError
from vm_backend import QemuVM
from vm_backend.cmdline import kernel_cmdline
from vm_backend.domain_xml import DomainSpec, build, owner_from_xml
from vm_backend.memory import Mapping, guest_ram_mappings


def _spec(accel, **kw):
    return DomainSpec(name="cvbench-vm-1-abc", kernel="/k/vmlinuz", initramfs="/k/initrd.cpio",
                      args=["ops", "getppid"], accel=accel, console_socket="/run/cvbench/vm/x.sock",
                      owner_pid=4242, owner_start=99, owner_host="h1", **kw)


@pytest.mark.parametrize("accel,dtype", [("kvm", "kvm"), ("tcg", "qemu")])
def test_xml_validates_with_libvirt_schema(tmp_path, accel, dtype):
    validate = need("virt-xml-validate")
    need("xmllint")
    xml = build(_spec(accel, tb_cache_mib=64, vcpus=2, memory_mib=256))
    f = tmp_path / f"{accel}.xml"
    f.write_text(xml)
    r = subprocess.run([validate, str(f), "domain"], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    root = ET.fromstring(xml)
    assert root.get("type") == dtype
    assert root.findtext("vcpu") == "2" and root.findtext("memory") == "256"


def test_xml_minimal_devices_and_lifecycle():
    root = ET.fromstring(build(_spec("tcg", tb_cache_mib=32)))
    dev = root.find("devices")
    assert dev.find("controller[@type='usb']").get("model") == "none"
    assert dev.find("memballoon").get("model") == "none"
    assert dev.find("video/model").get("type") == "none"
    assert dev.find("interface") is None and dev.find("disk") is None and dev.find("graphics") is None
    assert root.find("features/acpi") is not None          # poweroff must end the domain
    for ev in ("on_poweroff", "on_reboot", "on_crash"):
        assert root.findtext(ev) == "destroy"
    assert root.findtext("features/tcg/tb-cache") == "32"
    assert dev.find("serial/source").get("mode") == "connect"
    assert root.findtext("os/cmdline").endswith(" -- ops getppid")
    assert root.find("cpu") is None


def test_kvm_xml_uses_host_passthrough_and_no_tb_cache():
    root = ET.fromstring(build(_spec("kvm", tb_cache_mib=32)))
    assert root.find("cpu").get("mode") == "host-passthrough"
    assert root.find("features/tcg") is None


def test_owner_metadata_round_trip():
    assert owner_from_xml(build(_spec("tcg"))) == (4242, 99, "h1")
    assert owner_from_xml("<domain><name>x</name></domain>") is None


def test_bad_accel_and_args_are_refused():
    with pytest.raises(ValueError):
        build(_spec("hvf"))
    with pytest.raises(CvbError, match="cannot cross the kernel command line"):
        kernel_cmdline(["ops", "get ppid"])
    with pytest.raises(CvbError, match="no probe arguments"):
        kernel_cmdline([])


def test_qemu_argv_microvm_gets_a_tsc_rate(image):
    from vm_backend.tsc import host_tsc
    khz, why = host_tsc()
    if khz is None:
        pytest.skip(f"host TSC rate not known here: {why}")
    vm = QemuVM(image.kernel, image.initramfs, ["ready"], accel="tcg", machine="microvm", tb_cache_mib=64)
    from vm_backend.accel import Accel
    vm.accel = Accel("tcg", "test")
    argv = vm.qemu_argv("/tmp/x.sock")
    assert argv[argv.index("-M") + 1] == "microvm,acpi=on"
    assert argv[argv.index("-accel") + 1] == "tcg,tb-size=64"
    append = argv[argv.index("-append") + 1]
    assert "tsc=reliable" in append and "tsc_early_khz=" in append and append.endswith(" -- ready")
    assert "-nodefaults" in argv and argv[argv.index("-name") + 1].startswith("guest=cvbench-qemu-")


def test_unreadable_kernel_is_a_clear_env_error(tmp_path, image):
    k = tmp_path / "vmlinuz"
    k.write_bytes(b"x")
    os.chmod(k, 0o600)
    with pytest.raises(CvbError) as e:
        QemuVM(str(k), image.initramfs, ["ready"], accel="tcg")
    assert e.value.status == 2 and "chmod" in e.value.fix


def test_guest_ram_is_the_exact_size_anonymous_mapping():
    mib = 1 << 20
    maps = [Mapping(0x1000, 128 * mib, "", pss=40 * mib), Mapping(0x9000000, 1 * mib, "", pss=mib),
            Mapping(0xa000000, 128 * mib, "/usr/bin/qemu", pss=5 * mib)]
    ram, exact = guest_ram_mappings(maps, 128 * mib)
    assert exact and ram == [maps[0]]
    ram, exact = guest_ram_mappings([Mapping(0, 100 * mib, ""), Mapping(0, 28 * mib, "")], 128 * mib)
    assert not exact and sum(m.size for m in ram) == 128 * mib


@pytest.mark.parametrize("accel,cpu", [("tcg", "qemu64"), ("kvm", "host")])
def test_raw_qemu_pc_argv_is_libvirts_configuration(image, accel, cpu):
    """Backend qemu: the machine, CPU model, clock and devices libvirt derives
    from our domain XML, and no monitor (libvirt's management is the difference)."""
    from vm_backend.accel import Accel
    from vm_backend.qemu_vm import LIBVIRT_LIKE
    vm = QemuVM(image.kernel, image.initramfs, ["ready"], accel="tcg")
    vm.accel = Accel(accel, "test")
    argv = vm.qemu_argv("/tmp/x.sock")
    assert vm.backend == "qemu" and vm.machine == "pc"
    assert argv[argv.index("-machine") + 1] == "pc,usb=off,dump-guest-core=off"
    assert argv[argv.index("-accel") + 1] == accel and argv[argv.index("-cpu") + 1] == cpu
    assert argv[argv.index("-rtc") + 1] == "base=utc"
    assert " ".join(LIBVIRT_LIKE) in " ".join(argv)
    assert "-mon" not in argv and "-qmp" not in argv and "-S" not in argv
    append = argv[argv.index("-append") + 1]
    assert "tsc_early_khz" not in append               # pc calibrates against its HPET/PM timer
    assert append == build(_spec(accel)).split("<cmdline>")[1].split("</cmdline>")[0].replace(
        "ops getppid", "ready")                        # the libvirt domain's command line


def test_microvm_is_its_own_backend(image):
    vm = QemuVM(image.kernel, image.initramfs, ["ready"], accel="tcg", machine="microvm")
    assert vm.backend == "qemu-microvm"
    with pytest.raises(CvbError, match="no machine type"):
        QemuVM(image.kernel, image.initramfs, ["ready"], accel="tcg", machine="nosuch")
