"""The method contract and what every layer shares: options, run configuration, registries, seeds,
paths and file locks. Imports nothing else from ffbench."""
