"""Actions that run a program: ``node*`` (``runs.main/pre/post``), and Forgejo's ``sh``/``go``.

As forgejo-runner (``act/runner/action.go``): ``node <action dir>/<main>`` with the
``node`` on PATH whatever ``node12/16/20/24`` says, in the workspace, with the step's
env plus ``INPUT_<NAME>`` for every declared input (the ``with:`` value, else the
interpolated ``default``), ``STATE_<name>`` saved by earlier stages of the same step
through ``GITHUB_STATE``/``::save-state::``, and ``GITHUB_PATH`` prepended to ``PATH``.
``sh`` actions run ``sh -c <main>``; ``go`` actions are built with ``go build`` in
their directory, then run. ``GITHUB_ACTION_PATH`` is set for all of them
(forgejo-runner only sets it for ``sh`` and composite actions).

It builds on ``steps.py`` (:func:`run_process`); ``uses.py`` dispatches to it.
"""

from __future__ import annotations

from scheduler.executor.actions import NODE
from scheduler.executor.contexts import github_env
from scheduler.executor.steps import MAIN, PRE, StepFailed, StepRun, input_key, run_process


def action_env(sr: StepRun) -> None:
    """``setupActionEnv``: the twins again, ``STATE_*``, defaults of missing inputs."""
    scope, action = sr.scope, sr.action
    assert action is not None and sr.action_dir is not None
    sr.env.update(github_env(sr.github(), scope.run.runs_on))
    for name, value in scope.states.get(sr.step.id, {}).items():
        sr.env[f"STATE_{name}"] = value
    defaults = scope.evaluator()
    for name, default in action.inputs.items():
        key = input_key(name)
        if key not in sr.env:
            sr.env[key] = defaults.interpolate(default or "")
    sr.env["GITHUB_ACTION_PATH"] = sr.env["FORGEJO_ACTION_PATH"] = str(sr.action_dir)


async def run_program(sr: StepRun, stage: str) -> None:
    """One stage of a prepared ``node*``, ``sh`` or ``go`` action."""
    action = sr.action
    assert action is not None and sr.action_dir is not None
    entry = {PRE: action.pre, MAIN: action.main}.get(stage, action.post)
    action_env(sr)
    directory = sr.action_dir
    if action.using in NODE:
        await run_process(sr, ["node", str(directory / entry)])
    elif action.using == "sh":
        await run_process(sr, ["sh", "-c", entry])
    elif action.using == "go":
        binary = f"{entry}.out"
        await run_process(sr, ["go", "build", "-o", binary, entry], cwd=directory)
        await run_process(sr, [str(directory / binary)])
    else:
        raise StepFailed(f"runs.using {action.using!r} cannot run here")
