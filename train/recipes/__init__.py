"""The named recipes, one module per shipped checkpoint (each defines RECIPE), and the two types they are made of.
`python -m train.recipe` lists and runs them."""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass, field

from lm4lv_core.device import LLM_DTYPES
from train.engine import planned_steps


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

    def command(self, runs: str, resume: bool = False, threads: int | None = None) -> list[str]:
        """The step's command line; `threads` replaces the value of its `--threads` (a bigger machine's cores)."""
        args = [a.format(runs=runs) for a in self.args]
        if threads is not None and "--threads" in args:
            args[args.index("--threads") + 1] = str(threads)
        return [sys.executable, "-m", self.module, *args, *(["--resume"] if resume else [])]

    def out(self, runs: str) -> str:
        """The step's `--out` folder ("" if it has none)."""
        args = [a.format(runs=runs) for a in self.args]
        return args[args.index("--out") + 1] if "--out" in args else ""

    def recorded_steps(self, runs: str) -> int | None:
        """The steps its `done` record counts (a training.json's "steps", a saved state's "step"); None if absent."""
        path = self.done.format(runs=runs)
        if not os.path.exists(path):
            return None
        record = _read_json(path)
        return record["step"] if "step" in record else record.get("steps", 0)

    def is_done(self, runs: str) -> bool:
        if self.done_steps is None:
            return os.path.exists(self.done.format(runs=runs))
        recorded = self.recorded_steps(runs)
        return recorded is not None and recorded >= self.done_steps

    def other_run(self, runs: str, totals: set[int]) -> str | None:
        """What makes this training step's folder another run than the recipe's (it changed since the folder was
        made), or None. `totals`: the step counts of the recipe's steps training into this folder (a run may be
        continued to a longer total by a later step). Its saved state's planned total must be one of them; a state
        saved before totals were recorded must not have trained past the largest."""
        if self.done_steps is None:
            return None
        planned = planned_steps(os.path.join(self.out(runs), "state"))
        if planned is not None and planned not in totals:
            return f"holds a run of {planned} steps, not {self.done_steps}"
        recorded = self.recorded_steps(runs)
        if planned is None and recorded is not None and recorded > max(totals):
            return f"holds a run trained for {recorded} steps, not {self.done_steps}"
        return None


def _read_json(path: str) -> dict:
    with open(path) as f:
        return json.load(f)


@dataclass(frozen=True)
class Recipe:
    """A named chain of steps and the checkpoint folder its last step writes."""

    name: str
    description: str
    checkpoint: str
    steps: tuple[Step, ...] = field(default_factory=tuple)
    llm_dtype: str | None = None  # "fp32" / "bf16": the frozen LLM's dtype in every step (as `LM4LV_DTYPE`), so a
    # rerun computes what the recorded run did; None: the machine's default (bf16 where it has bf16 units)

    def __post_init__(self):
        names = [s.name for s in self.steps]
        if len(set(names)) != len(names):
            raise ValueError(f"Recipe {self.name}: step names repeat ({names})")
        if self.llm_dtype is not None and self.llm_dtype not in LLM_DTYPES:
            raise ValueError(f"Recipe {self.name}: llm_dtype {self.llm_dtype!r} is not one of {list(LLM_DTYPES)}")


def training_run(name: str, steps: int, *args: str, out: str | None = None) -> Step:
    """`train.train_lm4lv` for `steps` into {runs}/OUT (default NAME): resumed when stopped, done when its
    training.json records them."""
    out = out or name
    return Step(
        name,
        "train.train_lm4lv",
        ("--out", f"{{runs}}/{out}", "--steps", str(steps), *args),
        done=f"{{runs}}/{out}/lm4lv/training.json",
        resumable=True,
        done_steps=steps,
    )


def refit_run(name: str, source: str, *args: str) -> Step:
    """adapter_out refitted in closed form on free-running hidden states (2 rounds), {runs}/SOURCE into {runs}/NAME."""
    return Step(
        name,
        "train.refit_readout",
        ("--checkpoint", f"{{runs}}/{source}", "--out", f"{{runs}}/{name}", "--inputs", "free", "--rounds", "2", *args),
        done=f"{{runs}}/{name}/refit.json",
    )


def table2_run(name: str, checkpoint: str) -> Step:
    """Free-running Table 2 of {runs}/CHECKPOINT on the skimage photos: {runs}/NAME.json, .md and .png."""
    return Step(
        name,
        "train.evaluate",
        (
            "--checkpoint",
            f"{{runs}}/{checkpoint}",
            "--images",
            "skimage",
            "--tasks",
            "all",
            "--json",
            f"{{runs}}/{name}.json",
            "--markdown",
            f"{{runs}}/{name}.md",
            "--grid",
            f"{{runs}}/{name}.png",
        ),
        done=f"{{runs}}/{name}.json",
    )


def publish_run(source: str, to: str, *args: str) -> Step:
    """`train.publish` of {runs}/SOURCE into the shipped folder `to` (the last step of a recipe)."""
    return Step(
        "publish",
        "train.publish",
        ("--checkpoint", f"{{runs}}/{source}", "--to", to, *args),
        done=f"{{runs}}/{source}/published.json",
    )
