"""StreamTally's load tests: realistic CMCD v2 traffic against the service and baselines.

``python -m benchmarks`` runs them; docs/performance.md explains what is measured and how.
"""
