"""Composite actions: ``runs.steps`` run in a scope of their own (``action_composite.go``).

The composite's scope gets the step's env without its ``INPUT_*``, then one
``INPUT_<NAME>`` per declared input (the ``with:`` value, else the interpolated
``default``), ``GITHUB_ACTION_REPOSITORY``/``REF``, the action's directory as
``github.action_path``, the job's ``GITHUB_PATH`` entries, and no ``secrets``. Its
steps are ordinary steps (``run:``, ``uses:`` of any kind, nested composites), with
their own ``if:`` (``success()`` looks at the composite's steps only), ids (index
when absent), ``continue-on-error`` and ``timeout-minutes``; the first failure skips
the rest by default and fails the composite step. Afterwards the action's
``outputs.*.value`` become the outputs of the step that used it, and ``GITHUB_ENV``
and ``GITHUB_PATH`` changes propagate to the job. Pre and post stages of the
composite's steps run in the job's pre and post stages (posts in reverse order).
"""

from __future__ import annotations

import attrs

from scheduler.executor.contexts import ExprFailure
from scheduler.executor.state import Scope
from scheduler.executor.steps import (
    MAIN,
    PRE,
    StepFailed,
    StepRun,
    input_key,
    run_main,
    run_stage,
)
from scheduler.executor.uses import has_stage as has_stage_step
from scheduler.executor.uses import prepare as prepare_step
from scheduler.executor.uses import run_action_stage, run_post_stages


@attrs.define(eq=False)
class Composite:
    scope: Scope
    children: list[StepRun]


def _env(sr: StepRun) -> dict[str, str]:
    """``evaluateCompositeInputAndEnv``."""
    action = sr.action
    assert action is not None
    env = {k: v for k, v in sr.env.items() if not k.startswith("INPUT_")}
    defaults = sr.scope.evaluator(sr.env, github=sr.github())
    for name, default in action.inputs.items():
        key = input_key(name)
        if name in sr.step.with_ and key in sr.env:
            env[key] = sr.env[key]
        else:
            env[key] = defaults.interpolate(default or "")
    env["GITHUB_ACTION_REPOSITORY"] = sr.remote.repository if sr.remote else ""
    env["GITHUB_ACTION_REF"] = sr.remote.ref if sr.remote else ""
    return env


def build(sr: StepRun) -> Composite:
    """The composite's scope and steps, built once (its env is set per stage)."""
    if isinstance(sr.composite, Composite):
        return sr.composite
    parent = sr.scope
    action = sr.action
    assert action is not None and sr.action_dir is not None
    scope = Scope(
        run=parent.run,
        env={},
        secrets={},
        global_env=parent.global_env,
        extra_path=list(parent.extra_path),
        action_path=str(sr.action_dir),
        parent=parent,
    )
    composite = Composite(scope, [StepRun(step, scope) for step in action.steps])
    sr.composite = composite
    return composite


def ensure(sr: StepRun) -> Composite:
    """The composite, its env (inputs) and ``GITHUB_PATH`` refreshed for this stage."""
    composite = build(sr)
    composite.scope.env = _env(sr)
    composite.scope.extra_path = list(sr.scope.extra_path)
    return composite


async def prepare(sr: StepRun) -> None:
    """Fetch the remote actions the composite's steps use (the job's pre stage)."""
    for child in build(sr).children:
        await prepare_step(child)


def has_stage(sr: StepRun, stage: str) -> bool:
    """A composite has a pre/post stage if one of its (known) steps has one."""
    if not isinstance(sr.composite, Composite):
        return False
    return any(has_stage_step(child, stage) for child in sr.composite.children)


async def run(sr: StepRun, stage: str) -> None:
    try:
        composite = ensure(sr)
    except ExprFailure as exc:
        raise StepFailed(str(exc)) from None
    if stage == PRE:
        await _pre(composite)
    elif stage == MAIN:
        await _main(sr, composite)
    else:
        await _post(composite)


async def _pre(composite: Composite) -> None:
    for child in composite.children:
        if has_stage_step(child, PRE):
            result = await run_action_stage(child, PRE)
            if result.conclusion == "failure":
                raise StepFailed("")


async def _main(sr: StepRun, composite: Composite) -> None:
    scope = composite.scope
    failed = False
    for child in composite.children:
        result = await run_stage(child, MAIN, run_main)
        failed = failed or result.conclusion == "failure"
    parent = sr.scope
    outputs = scope.evaluator()
    assert sr.action is not None
    for name, value in sr.action.outputs.items():
        try:
            parent.set_output(name, outputs.interpolate(value))
        except ExprFailure as exc:
            parent.run.log.log(f"Error: output {name} of the action: {exc}")
            failed = True
    parent.extra_path = list(scope.extra_path)
    parent.env.update(scope.global_env)
    if failed:
        raise StepFailed("")


async def _post(composite: Composite) -> None:
    if await run_post_stages(composite.children, composite.scope):
        raise StepFailed("")
