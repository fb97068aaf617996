"""Rendering a trained run along a camera path: `camera_paths` (numpy only) and `frames` (PNGs, video)."""
