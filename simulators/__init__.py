"""Seeded plant simulators, fault scenarios with ground truth, and a load generator.

They speak only the public payload format of product.md §3 and never import earlywarn internals.
"""
