"""Conventions every cvbench package shares: errors and exit codes, the probe's
line format, object naming and on-disk paths.

This is the one leaf package: it imports nothing of cvbench's own, so runtime/,
vm_backend/, bench/, scenarios/ and analysis/ may all use it without bending the
one-way dependency rule of docs/architecture.md.
"""
