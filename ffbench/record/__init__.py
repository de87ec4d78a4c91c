"""The record of a suite: the results store, the MLflow mirror, run manifests, the one definition of
which runs count, and exports."""
