"""The rules language: SLOs, drift and no-data rules, receivers, routes, silences, durations."""
