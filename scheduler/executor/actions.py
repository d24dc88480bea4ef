"""``uses:``: which action a step names, where its code comes from, and its ``action.yml``.

Remote actions (``owner/repo[/path]@ref`` or ``https://host/owner/repo[/path]@ref``)
are resolved against the task's default actions URL (``forgejo_default_actions_url``,
``https://`` added when missing) or their own URL, as forgejo-runner does
(``step_action_remote.go``), and fetched *without* any token: the task's token belongs
to the instance that sent the task, not to the one serving actions.

Each URL has one bare repository in a cache shared by all tasks
(``<cache>/<sha256(url)[:2]>/<sha256(url)[2:]>.git``). A fetch (all refs) happens
whenever a task needs the URL, except when the ref is a full commit SHA the cache
already has. Short SHAs are refused, as forgejo-runner does. Each task then gets its
own copy of the commit (``git read-tree -u`` with a private index), so tasks never
share a work tree and a job may write into its action's directory. One lock per
repository keeps concurrent tasks from fetching into it at the same time.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import attrs
import trio
import yaml

from scheduler.executor.process import run_command
from scheduler.executor.workflow import Step, WorkflowError, load_yaml, parse_step

NODE = frozenset({"node12", "node16", "node20", "node24"})
USING = NODE | {"docker", "composite", "go", "sh"}
_FULL_SHA = re.compile(r"^[0-9a-f]{40}$")
_SHORT_SHA = re.compile(r"^[0-9a-f]{4,39}$")
_REMOTE = re.compile(r"^([^/@]+)/([^/@]+)(/([^@]*))?(@(.*))?$")
GIT_TIMEOUT = 600.0


class ActionError(Exception):
    """An action cannot be used; the message is the log line."""


@attrs.frozen
class Action:
    """The parts of an ``action.yml`` the executor uses."""

    name: str
    using: str
    inputs: Mapping[str, str | None] = attrs.field(factory=dict)  # name -> default
    outputs: Mapping[str, str] = attrs.field(factory=dict)  # name -> value expression
    main: str = ""
    pre: str = ""
    pre_if: str = "always()"
    post: str = ""
    post_if: str = "always()"
    image: str = ""
    steps: tuple[Step, ...] = ()


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def read_action(directory: Path, what: str) -> Action:
    """``action.yml``, else ``action.yaml``, else a ``Dockerfile`` (a docker action)."""
    for name in ("action.yml", "action.yaml"):
        path = directory / name
        if path.is_file():
            break
    else:
        if (directory / "Dockerfile").is_file():
            return Action(name="(Synthetic)", using="docker", image="Dockerfile")
        raise ActionError(
            f"failed to read action '{what}': no action.yml or action.yaml in {directory}"
        )
    try:
        doc = load_yaml(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise ActionError(f"failed to read {path.name} of action '{what}': {exc}") from None
    try:
        return _action(doc, what)
    except WorkflowError as exc:
        raise ActionError(f"invalid {path.name} of action '{what}': {exc}") from None


def _mapping(value: Any, where: str) -> Mapping[Any, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise WorkflowError(f"{where} is not a mapping")
    return value


def _action(doc: Any, what: str) -> Action:
    doc = _mapping(doc, "the file")
    runs = _mapping(doc.get("runs"), "runs")
    using = _text(runs.get("using")).lower()
    if using not in USING:
        raise WorkflowError(
            f"runs.using must be one of {', '.join(sorted(USING))}, got {using!r}"
        )
    inputs: dict[str, str | None] = {}
    for key, spec in _mapping(doc.get("inputs"), "inputs").items():
        spec = _mapping(spec, f"inputs.{key}")
        default = spec.get("default")
        inputs[str(key)] = None if default is None else _text(default)
    outputs = {
        str(key): _text(_mapping(spec, f"outputs.{key}").get("value"))
        for key, spec in _mapping(doc.get("outputs"), "outputs").items()
    }
    steps_doc = runs.get("steps") or []
    if not isinstance(steps_doc, list):
        raise WorkflowError("runs.steps is not a list")
    if using == "composite" and not steps_doc:
        raise WorkflowError("a composite action needs runs.steps")
    if using in NODE and not _text(runs.get("main")):
        raise WorkflowError(f"a {using} action needs runs.main")
    return Action(
        name=_text(doc.get("name")) or what,
        using=using,
        inputs=inputs,
        outputs=outputs,
        main=_text(runs.get("main")),
        pre=_text(runs.get("pre")),
        pre_if=_text(runs.get("pre-if")) or "always()",
        post=_text(runs.get("post")),
        post_if=_text(runs.get("post-if")) or "always()",
        image=_text(runs.get("image")),
        steps=tuple(
            parse_step(i, s, f"runs.steps[{i}]") for i, s in enumerate(steps_doc)
        ),
    )


@attrs.frozen
class RemoteRef:
    """``[https://host/]owner/repo[/path]@ref``."""

    owner: str
    repo: str
    path: str
    ref: str
    base: str = ""  # ``https://host`` when the step names it, else the default URL applies

    def clone_url(self, default: str) -> str:
        base = self.base or default
        if not base.startswith(("http://", "https://")):
            base = "https://" + base
        return f"{base.rstrip('/')}/{self.owner}/{self.repo}"

    @property
    def repository(self) -> str:
        return f"{self.owner}/{self.repo}"


def parse_remote(uses: str) -> RemoteRef | None:
    base = ""
    rest = uses
    for scheme in ("https://", "http://"):
        if uses.startswith(scheme):
            host, sep, rest = uses[len(scheme):].partition("/")
            if not sep:
                return None
            base = scheme + host
            break
    match = _REMOTE.match(rest)
    if match is None or not match.group(6):
        return None
    return RemoteRef(
        owner=match.group(1), repo=match.group(2), path=match.group(4) or "",
        ref=match.group(6), base=base,
    )


def _exists(path: Path) -> bool:
    return path.exists()


def _mkdir(path: Path) -> None:
    path.mkdir(parents=True, exist_ok=True)


def _unlink(path: str) -> None:
    Path(path).unlink(missing_ok=True)


def _git_env() -> dict[str, str]:
    env = {k: os.environ[k] for k in ("PATH", "HOME") if k in os.environ}
    env.update(GIT_TERMINAL_PROMPT="0", GIT_ASKPASS="true", LANG="C", LC_ALL="C")
    return env


@attrs.define
class ActionCache:
    """Bare repositories of actions, shared by every task of the executor."""

    root: Path
    kill_grace: float = 5.0
    _locks: dict[str, trio.Lock] = attrs.field(factory=dict, init=False)

    async def _git(self, *args: str, cwd: Path, env: Mapping[str, str] | None = None,
                   time_limit: float = GIT_TIMEOUT) -> tuple[int, list[str]]:
        lines: list[str] = []
        done = await run_command(
            ["git", *args], cwd=cwd, env=dict(env or _git_env()), on_line=lines.append,
            time_limit=time_limit, kill_grace=self.kill_grace, drain_timeout=2.0,
        )
        if done.timed_out:
            lines.append(f"git {args[0]} took longer than {time_limit:.0f}s")
            return -1, lines
        return (done.returncode if done.returncode is not None else -1), lines

    async def checkout(
        self, url: str, ref: str, dest: Path, log: Callable[[str], None]
    ) -> str:
        """Put the tree of ``url`` at ``ref`` into ``dest``; the commit SHA."""
        digest = hashlib.sha256(url.encode()).hexdigest()
        bare = self.root / digest[:2] / f"{digest[2:]}.git"
        lock = self._locks.setdefault(str(bare), trio.Lock())
        async with lock:
            if not _exists(bare / "HEAD"):
                _mkdir(bare)
                code, out = await self._git("init", "--bare", "-q", str(bare), cwd=bare)
                if code != 0:
                    raise ActionError(f"git init failed: {' '.join(out[-3:])}")
            sha = await self._resolve(bare, ref) if _FULL_SHA.match(ref) else None
            if sha is None:
                log(f"☁ git clone '{url}' # ref={ref}")
                code, out = await self._git(
                    "--git-dir", str(bare), "fetch", "--force", "--prune", "--quiet",
                    url, "+refs/heads/*:refs/heads/*", "+refs/tags/*:refs/tags/*",
                    cwd=bare,
                )
                sha = await self._resolve(bare, ref)
                if code != 0:
                    detail = " / ".join(line for line in out[-3:] if line.strip())
                    if sha is None:
                        raise ActionError(f"cannot fetch {url}: {detail}")
                    log(f"warning: cannot fetch {url} ({detail}); using the cached {ref}")
            if sha is None:
                if _SHORT_SHA.match(ref):
                    raise ActionError(
                        f"Unable to resolve action {url}@{ref}, the provided ref `{ref}` is "
                        "the shortened version of a commit SHA, which is not supported. "
                        "Please use the full commit SHA instead"
                    )
                raise ActionError(f"{url} has no branch, tag or commit {ref!r}")
            _mkdir(dest)
            env = _git_env()
            env["GIT_INDEX_FILE"] = str(dest.parent / f".{dest.name}.index")
            code, out = await self._git(
                "--git-dir", str(bare), "--work-tree", str(dest), "read-tree", "-u",
                "--reset", sha, cwd=dest, env=env,
            )
            _unlink(env["GIT_INDEX_FILE"])
            if code != 0:
                raise ActionError(f"cannot check out {url}@{ref}: {' '.join(out[-3:])}")
            return sha

    async def _resolve(self, bare: Path, ref: str) -> str | None:
        candidates = [f"refs/tags/{ref}", f"refs/heads/{ref}"]
        if _FULL_SHA.match(ref):
            candidates.append(ref)
        for candidate in candidates:
            code, out = await self._git(
                "--git-dir", str(bare), "rev-parse", "--verify", "--quiet",
                f"{candidate}^{{commit}}", cwd=bare, time_limit=60.0,
            )
            if code == 0 and out and _FULL_SHA.match(out[0].strip()):
                return out[0].strip()
        return None
