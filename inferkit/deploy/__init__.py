"""Shipping inferkit: container images and the manifests that run them (KServe, Seldon, Ray)."""
