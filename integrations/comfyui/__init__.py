"""ComfyUI nodes for noisear-gpu: learned initial-noise priors as ComfyUI NOISE objects.

Install: put (or symlink) this folder into ComfyUI/custom_nodes/ as `noisear_gpu_nodes`, with the
`noisear_gpu` Python package importable (pip install its wheel, or set PYTHONPATH to python/).
"""
from .nodes import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS

__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS"]
