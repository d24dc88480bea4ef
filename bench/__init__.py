"""Benchmarks: our scheduler beside models of forgejo-runner 12.8's and GitLab Runner's policies.

Entry point: ``python -m bench.run`` (see bench/README.md).
"""
