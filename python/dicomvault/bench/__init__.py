"""Synthetic workloads and the `dicomvault bench` driver."""
