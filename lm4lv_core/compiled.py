"""Opt-in `torch.compile` of the frozen LLM's forward, for generation (`LM4LV.compile_llm()`, CLI `--compile`).

Measured on a 2-core CPU (`python -m bench.generation_speed --compile`): the decoding step of a tile batch is faster
once compiled, but the first call of each new shape (batch size, prompt or decoding step) compiles for minutes on a
cold cache and for about half a minute from inductor's on-disk cache, so it pays for long jobs and servers, not for
one image. Anything that fails to compile falls back to the eager forward with one warning; gradients always run
eagerly (training does not use it).
"""

from __future__ import annotations

import warnings

import torch


class CompiledForward:
    """Call `torch.compile(forward)` without gradients, and `forward` itself with them or once compiling failed."""

    def __init__(self, forward):
        self.eager = forward
        self.compiled = torch.compile(forward)
        self.failure: str | None = None

    def __call__(self, *args, **kwargs):
        if self.failure is None and not torch.is_grad_enabled():
            try:
                return self.compiled(*args, **kwargs)
            except Exception as error:  # compiler or backend errors; a genuine input error recurs eagerly below
                first_line = (str(error).strip().splitlines() or [""])[0][:200]
                self.failure = f"{type(error).__name__}: {first_line}"
                warnings.warn(
                    f"torch.compile of the LLM failed ({self.failure}); generating without it.",
                    RuntimeWarning,
                    stacklevel=2,
                )
        return self.eager(*args, **kwargs)
