"""Metrics, image I/O, padding/tiling inference, checkpoint I/O and evaluation."""
