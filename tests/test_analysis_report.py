"""report.md sections that read scenario-specific records from meta.json."""
from __future__ import annotations

from analysis import report


def test_interleaved_vm_boots_are_reported_with_the_libvirt_ratio():
    meta = {"vm_interleaved": {"rounds": 8, "order": "random per round",
                               "median_s": {"qemu": {"ready": 1.5, "lifecycle": 1.53},
                                            "libvirt": {"ready": 1.72, "lifecycle": 3.41}},
                               "libvirt_over_qemu": {"ready": 1.72 / 1.5, "lifecycle": 3.41 / 1.53}}}
    text = "\n".join(report.interleaved_section(meta))
    assert "8 rounds" in text and "| libvirt | 1.72 s | 3.41 s |" in text
    assert "ready 1.147×" in text
    assert report.interleaved_section({}) == []
