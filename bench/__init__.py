"""The cvbench harness: CLI, backend registry, pyperf integration, environment
metadata and the shared guest image."""
