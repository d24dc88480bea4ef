"""``uses:`` steps: fetching remote actions (the pre stage) and running any action.

Dispatch by ``runs.using``: ``node*``, ``sh`` and ``go`` (``node.py``), ``composite``
(``composite.py``); docker actions, ``uses: docker://`` and reusable workflows as steps
fail with a row saying why. Local actions (``./path``) are read from the workspace
when their step runs, since an earlier step (a checkout) usually creates them.
"""

from __future__ import annotations

from collections.abc import Sequence

from scheduler.executor.actions import ActionError, parse_remote, read_action
from scheduler.executor.state import Scope, StepResult
from scheduler.executor.steps import (
    CONTAINER_NEEDED,
    MAIN,
    POST,
    PRE,
    StepFailed,
    StepRun,
    run_stage,
    stage_header,
)


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
        from scheduler.executor import composite  # it builds on this module

        await composite.prepare(sr)


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
    from scheduler.executor import composite, node  # they build on this module

    action = sr.action
    assert action is not None
    if action.using == "composite":
        await composite.run(sr, stage)
    elif action.using == "docker":
        raise StepFailed(f"`{sr.step.uses}` is a docker action, which {CONTAINER_NEEDED}")
    else:
        await node.run(sr, stage)


def has_stage(sr: StepRun, stage: str) -> bool:
    """Whether the prepared action has a pre/post stage (``hasPreStep``/``hasPostStep``)."""
    action = sr.action
    if action is None:
        return False
    if action.using == "composite":
        from scheduler.executor import composite  # it builds on this module

        return composite.has_stage(sr, stage)
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
