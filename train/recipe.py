"""Named training recipes: one file per shipped checkpoint in `train/recipes/`, each the whole chain that makes it
(stages, per-task parts, refits, merge, Table 2) as a list of steps over the entry points of `train/`.

    python -m train.recipe --list
    python -m train.recipe lm4lv-gemma3 --dry-run      # the commands, and which are done
    python -m train.recipe lm4lv-gemma3                # runs what is not done; rerun to resume where it stopped

A step is done when its `done` file exists (the entry points write their outputs atomically at the end); a training
step that stopped part way (`--max-minutes`, SIGTERM, a crash) is rerun with `--resume` and continues exactly. A
training step whose folder holds a run of another length (the recipe changed since it ran) is "stale": nothing runs
until a new `--runs` folder is given (or the old one removed), so no chain mixes two versions of a recipe.
Outputs go under `--runs` (default `runs/recipes/NAME`); `{runs}` in a step's arguments stands for that folder. A
recipe may pin the frozen LLM's dtype (`Recipe.llm_dtype`, passed to its steps as `LM4LV_DTYPE`); `--llm-dtype`
overrides it.
"""

from __future__ import annotations

import argparse
import importlib
import os
import pkgutil
import shlex
import subprocess
import sys
import time

from lm4lv_core.device import LLM_DTYPES
from train.recipes import Recipe, Step

RECIPES_PACKAGE = "train.recipes"


def available() -> dict[str, Recipe]:
    """Every recipe in train/recipes/, by name (each module defines RECIPE)."""
    package = importlib.import_module(RECIPES_PACKAGE)
    recipes = {}
    for info in pkgutil.iter_modules(package.__path__):
        recipe = importlib.import_module(f"{RECIPES_PACKAGE}.{info.name}").RECIPE
        recipes[recipe.name] = recipe
    return recipes


def folder_totals(recipe: Recipe, runs: str) -> dict[str, set[int]]:
    """Each training folder's step counts in the recipe (a later step may continue a run to a longer total)."""
    totals: dict[str, set[int]] = {}
    for step in recipe.steps:
        if step.done_steps is not None:
            totals.setdefault(step.out(runs), set()).add(step.done_steps)
    return totals


def plan(recipe: Recipe, runs: str) -> list[tuple[Step, str]]:
    """Each step with its state: "done", "resume" (a training run stopped part way), "todo" or "stale" (its folder
    holds another run than the step asks for: the recipe changed since that folder was made)."""
    return [(step, state) for step, state, _ in _states(recipe, runs)]


def _states(recipe: Recipe, runs: str) -> list[tuple[Step, str, str | None]]:
    """`plan`'s states, each with why a stale step is stale (else None)."""
    totals = folder_totals(recipe, runs)
    states = []
    for step in recipe.steps:
        why = step.other_run(runs, totals.get(step.out(runs), set()))
        if why:
            states.append((step, "stale", why))
        elif step.is_done(runs):
            states.append((step, "done", None))
        elif step.resumable and os.path.isdir(os.path.join(step.out(runs), "state")):
            states.append((step, "resume", None))
        else:
            states.append((step, "todo", None))
    return states


def environment(recipe: Recipe, llm_dtype: str | None = None) -> dict[str, str]:
    """The steps' environment: this one, with `LM4LV_DTYPE` set to `llm_dtype` ("auto": the machine's default),
    else to the recipe's pinned dtype (else left as it is)."""
    env = dict(os.environ)
    chosen = llm_dtype or recipe.llm_dtype
    if chosen == "auto":
        env.pop("LM4LV_DTYPE", None)
    elif chosen is not None:
        env["LM4LV_DTYPE"] = chosen
    return env


def run(
    recipe: Recipe,
    runs: str,
    dry_run: bool = False,
    log=print,
    threads: int | None = None,
    llm_dtype: str | None = None,
) -> int:
    """Run the steps not done, in order (`threads`: see Step.command; `llm_dtype`: see environment); returns the exit
    code of the first that fails (0 if none)."""
    env = environment(recipe, llm_dtype)
    log(f"the frozen LLM in {env.get('LM4LV_DTYPE', 'the machine default dtype')}")
    states = _states(recipe, runs)
    stale = [(step, why) for step, state, why in states if state == "stale"]
    for step, why in stale:
        log(f"[ stale] {step.name}: {step.out(runs)} {why} (the recipe changed since it ran)")
    if stale and not dry_run:
        log(f"nothing run: give a new --runs folder, or remove {runs} to run the recipe again from the start")
        return 1
    for step, state, _ in states:
        command = step.command(runs, resume=state == "resume", threads=threads)
        log(f"[{state:>6}] {step.name}: {shlex.join(command[1:])}")
        if dry_run or state in ("done", "stale"):
            continue
        began = time.time()
        code = subprocess.call(command, env=env)
        if code != 0:
            log(f"step {step.name} failed (exit {code}); rerun the recipe to continue from it")
            return code
        if not step.is_done(runs):
            log(f"step {step.name} stopped before its end ({step.done.format(runs=runs)} missing); rerun to resume")
            return 1
        log(f"step {step.name} done in {time.time() - began:.0f} s")
    return 0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("name", nargs="?", help="the recipe (see --list)")
    p.add_argument("--list", action="store_true", help="list the recipes")
    p.add_argument("--dry-run", action="store_true", help="print the commands and their state, run nothing")
    p.add_argument("--runs", default=None, help="output folder (default runs/recipes/NAME)")
    p.add_argument(
        "--threads",
        type=int,
        default=None,
        help="CPU threads for every step that sets them (the recipes give 1: two jobs on two cores); a step's "
        "result does not depend on it beyond floating-point rounding",
    )
    p.add_argument(
        "--llm-dtype",
        choices=(*LLM_DTYPES, "auto"),
        default=None,
        help="the frozen LLM's dtype in every step, over the recipe's own (auto: the machine's default, bf16 where "
        "the CPU or GPU runs it fast); a recipe that pins one computed its recorded numbers in it",
    )
    args = p.parse_args(argv)
    recipes = available()
    if args.list or not args.name:
        for recipe in recipes.values():
            print(f"{recipe.name:<22} {len(recipe.steps):>3} steps -> {recipe.checkpoint}: {recipe.description}")
        return 0
    if args.name not in recipes:
        raise SystemExit(f"No recipe {args.name!r}; choose from {', '.join(recipes)}.")
    runs = args.runs or os.path.join("runs", "recipes", args.name)
    return run(recipes[args.name], runs, args.dry_run, threads=args.threads, llm_dtype=args.llm_dtype)


if __name__ == "__main__":
    sys.exit(main())
