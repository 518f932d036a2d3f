"""The named recipes, one module per shipped checkpoint (each defines RECIPE), and the two types they are made of.
`python -m train.recipe` lists and runs them."""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Step:
    """One command of a recipe: `python -m module *args`, done once `done` exists."""

    name: str
    module: str
    args: tuple[str, ...]
    done: str  # a path (with {runs}) that exists once the step has finished
    resumable: bool = False  # a training run: rerun with --resume when its state folder exists
    done_steps: int | None = None  # a training run: `done` (its training.json, also written at every save) must
    # record at least this many steps

    def command(self, runs: str, resume: bool = False) -> list[str]:
        args = [a.format(runs=runs) for a in self.args]
        return [sys.executable, "-m", self.module, *args, *(["--resume"] if resume else [])]

    def is_done(self, runs: str) -> bool:
        path = self.done.format(runs=runs)
        if not os.path.exists(path):
            return False
        if self.done_steps is None:
            return True
        with open(path) as f:
            record = json.load(f)  # a training.json ("steps") or a run's state.json ("step")
        return (record.get("steps") or record.get("step") or 0) >= self.done_steps


@dataclass(frozen=True)
class Recipe:
    """A named chain of steps and the checkpoint folder its last step writes."""

    name: str
    description: str
    checkpoint: str
    steps: tuple[Step, ...] = field(default_factory=tuple)

    def __post_init__(self):
        names = [s.name for s in self.steps]
        if len(set(names)) != len(names):
            raise ValueError(f"Recipe {self.name}: step names repeat ({names})")
