"""Training: the settings (`config`, torch-free), the `trainer` loop and evaluation, `metrics`."""
