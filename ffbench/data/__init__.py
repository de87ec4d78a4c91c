"""Datasets (built-in and plugin, offline and fetched) and the splits, normalisation and device-resident
loaders every run trains on."""
