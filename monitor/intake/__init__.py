"""Inference records from serving frameworks' own formats (pure: bytes and headers in, contract records out)."""
