"""Prometheus metrics: their declarations and what each runtime exports into them."""
