"""Detection: parse and validate records, the per-batch engine, fingerprints, reference profiles, scorers."""
