"""``uses:`` steps and composite actions: the recursive part of the executor.

A step's main stage runs a ``run:`` script (``steps.py``) or an action. An action is
a program (``node*``, ``sh``, ``go``: ``node.py``) or a composite, whose steps are
ordinary steps again, ``uses:`` of any kind and nested composites included. That
recursion (step → action → composite → step) is plain calls inside this one module,
so the modules below it import nothing above them: ``steps.py`` runs one stage of one
step with a body it is given, ``node.py`` runs programs, this module chooses the body
and recurses, and ``job.py`` drives it for the job's steps. Every import points down.

Dispatch by ``runs.using``; docker actions, ``uses: docker://`` and reusable workflows
as steps fail with a row saying why. Remote actions are fetched in the job's pre stage
(as forgejo-runner); local actions (``./path``) are read from the workspace when their
step runs, since an earlier step (a checkout) usually creates them.

Composite actions (``action_composite.go``): the composite's scope gets the step's env
without its ``INPUT_*``, then one ``INPUT_<NAME>`` per declared input (the ``with:``
value, else the interpolated ``default``), ``GITHUB_ACTION_REPOSITORY``/``REF``, the
action's directory as ``github.action_path``, the job's ``GITHUB_PATH`` entries, and
no ``secrets``. Its steps have their own ``if:`` (``success()`` looks at the
composite's steps only), ids (index when absent), ``continue-on-error`` and
``timeout-minutes``; the first failure skips the rest by default and fails the
composite step. Afterwards the action's ``outputs.*.value`` become the outputs of the
step that used it, and ``GITHUB_ENV`` and ``GITHUB_PATH`` changes propagate to the
job. Pre and post stages of the composite's steps run in the job's pre and post
stages (posts in reverse order).
"""

from __future__ import annotations

from collections.abc import Sequence

from scheduler.executor.actions import ActionError, parse_remote, read_action
from scheduler.executor.contexts import ExprFailure
from scheduler.executor.node import run_program
from scheduler.executor.state import Scope, StepResult
from scheduler.executor.steps import (
    CONTAINER_NEEDED,
    MAIN,
    POST,
    PRE,
    Composite,
    StepFailed,
    StepRun,
    input_key,
    run_script,
    run_stage,
    stage_header,
)


async def run_main(sr: StepRun) -> None:
    """The main stage's body: a ``run:`` script or a ``uses:`` action."""
    if sr.step.run is not None:
        await run_script(sr)
    else:
        await run_uses(sr)


async def prepare(sr: StepRun) -> None:
    """Fetch a remote action and read its ``action.yml`` (forgejo-runner: pre stage)."""
    if sr.kind != "remote" or sr.action is not None:
        return
    scope = sr.scope
    run = scope.run
    uses = scope.evaluator().interpolate(sr.step.uses or "")
    remote = parse_remote(uses)
    if remote is None:
        raise StepFailed(
            "Expected format {org}/{repo}[/path]@ref or https://example.com/{org}/{repo}"
            f"[/path]@ref. Actual '{uses}' Input string was not in a correct format"
        )
    if not remote.base and not run.default_actions_url:
        raise StepFailed(
            f"cannot resolve '{uses}': the task context has no "
            "forgejo_default_actions_url (or gitea_default_actions_url)"
        )
    url = remote.clone_url(run.default_actions_url)
    key = (url, remote.ref)
    try:
        if key not in run.checkouts:
            dest = run.checkout_dir(f"{remote.owner}-{remote.repo}-{remote.ref}")
            sha = await run.cache.checkout(url, remote.ref, dest, run.log.log)
            run.checkouts[key] = (dest, sha)
        directory = run.checkouts[key][0] / remote.path
        sr.action = read_action(directory, uses)
    except ActionError as exc:
        raise StepFailed(str(exc)) from None
    sr.remote, sr.action_dir = remote, directory
    if sr.action.using == "composite":
        await _prepare_composite(sr)


async def run_uses(sr: StepRun) -> None:
    """The main stage of a ``uses:`` step."""
    kind = sr.kind
    if kind == "docker":
        raise StepFailed(f"`uses: {sr.step.uses}` is a docker action, which {CONTAINER_NEEDED}")
    if kind == "workflow":
        raise StepFailed(
            f"`uses: {sr.step.uses}` is a reusable workflow; it can only be used by a job"
        )
    if kind == "local" and sr.action is None:
        directory = sr.scope.run.paths.workspace / (sr.step.uses or "")
        try:
            sr.action = read_action(directory, sr.step.uses or "")
        except ActionError as exc:
            raise StepFailed(str(exc)) from None
        sr.action_dir = directory
    await prepare(sr)
    await run_action(sr, MAIN)


async def run_action(sr: StepRun, stage: str) -> None:
    """One stage of a prepared action."""
    action = sr.action
    assert action is not None
    if action.using == "composite":
        await _run_composite(sr, stage)
    elif action.using == "docker":
        raise StepFailed(f"`{sr.step.uses}` is a docker action, which {CONTAINER_NEEDED}")
    else:
        await run_program(sr, stage)


def has_stage(sr: StepRun, stage: str) -> bool:
    """Whether the prepared action has a pre/post stage (``hasPreStep``/``hasPostStep``)."""
    action = sr.action
    if action is None:
        return False
    if action.using == "composite":
        return _composite_has_stage(sr, stage)
    if action.using == "docker":
        return False
    return bool(action.pre if stage == PRE else action.post)


async def run_action_stage(sr: StepRun, stage: str) -> StepResult:
    """The pre or post stage of a prepared action, under its ``pre-if``/``post-if``."""
    action = sr.action
    assert action is not None
    condition = action.pre_if if stage == PRE else action.post_if
    return await run_stage(
        sr, stage, lambda s: run_action(s, stage),
        condition=condition, on_start=stage_header(sr, stage),
    )


async def run_post_stages(steps: Sequence[StepRun], scope: Scope) -> bool:
    """Post stages of the steps that ran, last first (a job's or a composite's alike);
    True if one of them failed."""
    failed = False
    for sr in reversed(steps):
        result = scope.step_results.get(sr.step.id)
        if result is None or result.conclusion == "skipped" or not has_stage(sr, POST):
            continue
        outcome = await run_action_stage(sr, POST)
        failed = failed or outcome.conclusion == "failure"
    return failed


# --- composite actions --------------------------------------------------------------------


def _composite_env(sr: StepRun) -> dict[str, str]:
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


def _build_composite(sr: StepRun) -> Composite:
    """The composite's scope and steps, built once (its env is set per stage)."""
    if sr.composite is not None:
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


def _enter_composite(sr: StepRun) -> Composite:
    """The composite, its env (inputs) and ``GITHUB_PATH`` refreshed for this stage."""
    composite = _build_composite(sr)
    composite.scope.env = _composite_env(sr)
    composite.scope.extra_path = list(sr.scope.extra_path)
    return composite


async def _prepare_composite(sr: StepRun) -> None:
    """Fetch the remote actions the composite's steps use (the job's pre stage)."""
    for child in _build_composite(sr).children:
        await prepare(child)


def _composite_has_stage(sr: StepRun, stage: str) -> bool:
    """A composite has a pre/post stage if one of its (known) steps has one."""
    if sr.composite is None:
        return False
    return any(has_stage(child, stage) for child in sr.composite.children)


async def _run_composite(sr: StepRun, stage: str) -> None:
    try:
        composite = _enter_composite(sr)
    except ExprFailure as exc:
        raise StepFailed(str(exc)) from None
    if stage == PRE:
        await _composite_pre(composite)
    elif stage == MAIN:
        await _composite_main(sr, composite)
    else:
        await _composite_post(composite)


async def _composite_pre(composite: Composite) -> None:
    for child in composite.children:
        if has_stage(child, PRE):
            result = await run_action_stage(child, PRE)
            if result.conclusion == "failure":
                raise StepFailed("")


async def _composite_main(sr: StepRun, composite: Composite) -> None:
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


async def _composite_post(composite: Composite) -> None:
    if await run_post_stages(composite.children, composite.scope):
        raise StepFailed("")
