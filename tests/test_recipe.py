"""Named recipes: listing, the plan's states (todo, resume, done) and a run that stops where a step fails."""

import json
import os

from train.recipe import available, plan, run
from train.recipes import Recipe, Step


def test_every_recipe_file_is_listed():
    recipes = available()
    assert {"lm4lv-gemma3", "same-budget-smollm2"} <= set(recipes)
    for recipe in recipes.values():
        assert recipe.steps and all(step.module.startswith("train.") for step in recipe.steps)


def test_a_training_step_is_done_only_at_its_last_step(tmp_path):
    """training.json is written at every save: a run saved at step 125 of 600 is resumed, not skipped."""
    step = Step(
        "stage",
        "train.train_lm4lv",
        ("--out", "{runs}/stage", "--steps", "600"),
        done="{runs}/stage/lm4lv/training.json",
        resumable=True,
        done_steps=600,
    )
    runs = str(tmp_path)
    assert plan(Recipe("r", "", "", (step,)), runs)[0][1] == "todo"
    os.makedirs(tmp_path / "stage" / "lm4lv")
    os.makedirs(tmp_path / "stage" / "state")
    record = tmp_path / "stage" / "lm4lv" / "training.json"
    record.write_text(json.dumps({"steps": 125}))
    assert plan(Recipe("r", "", "", (step,)), runs)[0][1] == "resume"
    assert step.command(runs, resume=True)[-1] == "--resume"
    record.write_text(json.dumps({"steps": 600}))
    assert plan(Recipe("r", "", "", (step,)), runs)[0][1] == "done"


def test_a_folder_from_another_version_of_the_recipe_is_stale_and_nothing_runs(tmp_path):
    """A recipe whose step counts changed (lm4lv-gemma3's copy stage: 150 -> 300 steps) must not resume or skip the
    old runs: a state planned for another total, or a record of more steps, marks the step stale and stops the run."""
    stage0 = Step(
        "stage0", "train.recipe", ("--list", "--out", "{runs}/s0"), "{runs}/s0/lm4lv/training.json", True, 300
    )
    stage1 = Step(
        "stage1", "train.recipe", ("--list", "--out", "{runs}/s1"), "{runs}/s1/lm4lv/training.json", True, 300
    )
    recipe, runs = Recipe("r", "", "", (stage0, stage1)), str(tmp_path)
    for folder, planned, trained in (("s0", 150, 150), ("s1", None, 450)):  # s1: a state saved before totals
        os.makedirs(tmp_path / folder / "lm4lv")
        os.makedirs(tmp_path / folder / "state")
        (tmp_path / folder / "state" / "state.json").write_text(json.dumps({"step": trained, "steps": planned}))
        (tmp_path / folder / "lm4lv" / "training.json").write_text(json.dumps({"steps": trained}))
    assert [state for _, state in plan(recipe, runs)] == ["stale", "stale"]
    lines = []
    assert run(recipe, runs, log=lines.append) == 1
    assert "s0 holds a run of 150 steps, not 300" in lines[1] and "s1 holds a run trained for 450 steps" in lines[2]
    assert "nothing run" in lines[-1] and not any(line.startswith("[  ") for line in lines)
    (tmp_path / "s0" / "state" / "state.json").write_text(json.dumps({"step": 150, "steps": 300}))
    assert plan(recipe, runs)[0][1] == "resume"  # stopped at 150 of its 300: resumed
    assert not stage0.is_done(runs)


def test_a_run_continued_by_a_later_step_is_not_stale(tmp_path):
    """lm4lv-smollm2's stage 3 (1,000 steps) is continued to 1,800 by stage 3b in the same folder: both totals are
    the recipe's own, so neither step is stale once stage 3b ran, and stage 3b resumes stage 3's finished run."""
    out = ("--list", "--out", "{runs}/stage3")
    stage3 = Step("stage3", "train.recipe", out, "{runs}/stage3/lm4lv/training.json", True, 1000)
    stage3b = Step("stage3b", "train.recipe", out, "{runs}/stage3/lm4lv/training.json", True, 1800)
    recipe, runs = Recipe("r", "", "", (stage3, stage3b)), str(tmp_path)
    os.makedirs(tmp_path / "stage3" / "lm4lv")
    os.makedirs(tmp_path / "stage3" / "state")
    for step, planned in ((1000, 1000), (1800, 1800)):
        (tmp_path / "stage3" / "state" / "state.json").write_text(json.dumps({"step": step, "steps": planned}))
        (tmp_path / "stage3" / "lm4lv" / "training.json").write_text(json.dumps({"steps": step}))
        expected = ["done", "resume"] if step == 1000 else ["done", "done"]
        assert [state for _, state in plan(recipe, runs)] == expected
    stage3_of_the_shipped_recipe = [s for s in available()["lm4lv-smollm2"].steps if s.name in ("stage3", "stage3b")]
    assert {s.done_steps for s in stage3_of_the_shipped_recipe} == {1000, 1800}


def test_threads_replace_a_steps_own_and_leave_others_alone():
    recipe = available()["lm4lv-gemma3"]
    refit = next(step for step in recipe.steps if step.module == "train.refit_readout")
    command = refit.command("runs", threads=2)
    assert command[command.index("--threads") + 1] == "2" and command.count("--threads") == 1
    default = refit.command("runs")
    assert default[default.index("--threads") + 1] == "1"  # the recipe's own value without the override
    table2 = next(step for step in recipe.steps if step.module == "train.evaluate")
    assert "--threads" not in table2.command("runs", threads=2)


def test_run_stops_at_a_step_that_did_not_finish(tmp_path):
    lines = []
    listing = Step("list", "train.recipe", ("--list",), done="{runs}/never")
    after = Step("after", "train.recipe", ("--list",), done="{runs}/also-never")
    assert run(Recipe("r", "", "", (listing, after)), str(tmp_path), log=lines.append) == 1
    assert "stopped before its end" in lines[-1] and not any("after" in line for line in lines)


def test_every_step_parses_with_its_entry_point(tmp_path):
    """A recipe's arguments are flags its entry point has (the recipes are data: a renamed or removed flag would only
    show when a chain reached that step)."""
    import importlib

    checked = 0
    for recipe in available().values():
        for step in recipe.steps:
            parse = getattr(importlib.import_module(step.module), "parse_args", None)
            if parse is None:
                continue
            args = [a.format(runs=str(tmp_path)) for a in step.args]
            parse([a for a in args if a != "--resume"] + (["--resume"] if "--resume" in args else []))
            checked += 1
    assert checked > 50


def test_a_pinned_llm_dtype_reaches_every_step(tmp_path, monkeypatch):
    """`Recipe.llm_dtype` is passed to the steps as LM4LV_DTYPE; `--llm-dtype` overrides it, "auto" clears it."""
    import pytest

    from train import recipe as runner

    seen = []
    monkeypatch.setattr(runner.subprocess, "call", lambda command, env: seen.append(env.get("LM4LV_DTYPE")) or 0)
    monkeypatch.setenv("LM4LV_DTYPE", "bf16")
    step = Step("list", "train.recipe", ("--list",), done="{runs}/never")
    pinned = Recipe("r", "", "", (step,), llm_dtype="fp32")
    runner.run(pinned, str(tmp_path), log=lambda line: None)
    runner.run(pinned, str(tmp_path), log=lambda line: None, llm_dtype="auto")
    runner.run(Recipe("r", "", "", (step,)), str(tmp_path), log=lambda line: None)
    assert seen == ["fp32", None, "bf16"]  # pinned; the machine's default; the caller's own setting
    assert available()["lm4lv-gemma3"].llm_dtype == "fp32"
    with pytest.raises(ValueError, match="llm_dtype"):
        Recipe("r", "", "", (step,), llm_dtype="float32")


def test_a_continued_copy_stage_trains_on_in_its_folder_and_keeps_stage_1s_budget():
    """`chain(copy_continued_to=N)`: stage 0's run continued to N `repeat` steps in its own folder (resumed, not
    stale), and stage 1 still gets the rest of Table 7's 600 steps unless given its own length."""
    from train.recipes.lm4lv_gemma3 import STAGE1_STEPS, chain

    steps = {step.name: step for step in chain("gemma3", copy_steps=450, copy_continued_to=3000)}
    stage0, longer, stage1 = steps["stage0"], steps["stage0_long"], steps["stage1"]
    assert longer.out("runs") == stage0.out("runs") and (stage0.done_steps, longer.done_steps) == (450, 3000)
    assert stage1.done_steps == STAGE1_STEPS - 450 and "stage0_long" not in {s.name for s in chain("smollm2")}
    shipped = {step.name: step for step in available()["lm4lv-gemma3"].steps}  # its own stage 1 length, no stage 2
    assert shipped["stage1"].done_steps == 600 and shipped["stage0_long"].done_steps == 3000
    assert not any(name.startswith("stage2") for name in shipped) and "stage1_refit" in shipped["publish"].args[1]
