"""Stream runtime adapters: Kafka consumers/producers and the faust alerter app.

Thin I/O around the pure domain code in :mod:`monitor`; the only package that imports faust.
"""
