"""Synthetic traffic, toy models and attacks: demo and benchmark material, not the product."""
