"""Datasets: adapters to one per-image table, label spaces, splits, decoding and preprocessing."""
