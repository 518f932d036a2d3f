"""`spaces.GPU` on Hugging Face ZeroGPU Spaces, a no-op decorator everywhere else."""

from __future__ import annotations

try:  # pragma: no cover - only on Spaces
    import spaces

    gpu = spaces.GPU
except ImportError:

    def gpu(fn):
        return fn
