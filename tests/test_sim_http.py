"""The simulator's HTTP/Connect surface: routing, auth, errors, keep-alive, Register/Declare."""

from __future__ import annotations

import httpx
import trio

from scheduler.sim import InstanceSpec
from tests.support.sim import RUNNER, Rpc, running_sim


async def test_ping_needs_no_auth() -> None:
    async with running_sim() as sim, httpx.AsyncClient() as client:
        rpc = Rpc(sim, client, auth=False)
        got = await rpc.ok("Ping", {"data": "runner"}, service="ping.v1.PingService")
        assert got == {"data": "Hello, runner!"}


async def test_auth_failure_is_connect_unauthenticated() -> None:
    async with running_sim() as sim, httpx.AsyncClient() as client:
        anon = Rpc(sim, client, auth=False)
        for headers in (
            {},
            {"x-runner-uuid": sim.instances["a"].runner.uuid, "x-runner-token": "0" * 40},
            {"x-runner-uuid": "nope", "x-runner-token": sim.instances["a"].runner.token},
        ):
            resp = await anon.call("FetchTask", {}, headers=headers)
            assert resp.status_code == 401
            assert resp.headers["content-type"] == "application/json"
            assert resp.json() == {"code": "unauthenticated", "message": "unregistered runner"}
        assert sim.ledger.assigned_count == 0


async def test_credentials_of_one_instance_do_not_work_on_another() -> None:
    async with running_sim("a", "b") as sim, httpx.AsyncClient() as client:
        rpc = Rpc(sim, client, "a")
        rpc.name = "b"
        resp = await rpc.call("FetchTask", {})
        assert resp.status_code == 401


async def test_routing_and_connect_preconditions() -> None:
    async with running_sim("a", InstanceSpec("old", forgejo14=True)) as sim:
        async with httpx.AsyncClient() as client:
            rpc = Rpc(sim, client)
            base = sim.base_url("a")
            json_ct = {"content-type": "application/json"}
            # unknown procedure / instance / path: plain 404 (connect-go's http.NotFound)
            for url in (
                f"{base}/api/actions/{RUNNER}/Nope",
                f"{base}/api/actions/runner.v2.RunnerService/FetchTask",
                base.rsplit("/", 1)[0] + f"/zzz/api/actions/{RUNNER}/FetchTask",
                base + "/api/actions",
            ):
                resp = await client.post(url, content=b"{}", headers=json_ct)
                assert resp.status_code == 404, url
                assert resp.headers["content-type"].startswith("text/plain")
            # FetchSingleTask does not exist on Forgejo 14
            old = Rpc(sim, client, "old")
            assert (await old.call("FetchSingleTask", {})).status_code == 404
            assert (await rpc.call("FetchSingleTask", {})).status_code == 200
            # non-POST → 405
            resp = await client.get(rpc.url("FetchTask"), headers=rpc.headers)
            assert resp.status_code == 405 and resp.headers["allow"] == "POST"
            # content types
            for ctype, status in (
                ("application/json", 200),
                ("application/json; charset=utf-8", 200),
                ("application/json;charset=UTF-8", 200),
                ("application/proto", 415),
                ("text/plain", 415),
            ):
                resp = await client.post(
                    rpc.url("FetchTask"),
                    content=b"{}",
                    headers={**rpc.headers, "content-type": ctype},
                )
                assert resp.status_code == status, ctype
            # malformed JSON / wrong protocol version → invalid_argument
            resp = await client.post(
                rpc.url("FetchTask"), content=b"{", headers={**rpc.headers, **json_ct}
            )
            assert resp.status_code == 400 and resp.json()["code"] == "invalid_argument"
            resp = await rpc.call("FetchTask", {}, headers={"connect-protocol-version": "2"})
            assert resp.status_code == 400 and resp.json()["code"] == "invalid_argument"
            resp = await rpc.call("FetchTask", {}, headers={"connect-protocol-version": "1"})
            assert resp.status_code == 200


async def test_keep_alive_serves_many_rpcs_on_one_connection() -> None:
    async with running_sim() as sim, httpx.AsyncClient() as client:
        rpc = Rpc(sim, client)
        sim.instances["a"].add_job()
        for i in range(5):
            await rpc.fetch(version=i)
        await rpc.call("Nope")  # a 404 does not close the connection either
        await rpc.fetch()
        assert sim.http.connections_accepted == 1


async def test_large_answers_are_gzipped_when_accepted() -> None:
    async with running_sim() as sim, httpx.AsyncClient() as client:
        rpc = Rpc(sim, client)
        sim.instances["a"].add_job()
        resp = await rpc.call("FetchTask", {})
        assert resp.headers.get("content-encoding") == "gzip"  # httpx decodes it
        assert resp.json()["task"]["id"]


async def test_unknown_fields_and_snake_case_are_accepted() -> None:
    async with running_sim() as sim, httpx.AsyncClient() as client:
        rpc = Rpc(sim, client)
        sim.instances["a"].add_job()
        sim.instances["a"].add_job()
        got = await rpc.ok("FetchTask", {"tasks_version": 0, "task_capacity": 2, "bogus": {"x": 1}})
        assert len([got["task"], *got["additionalTasks"]]) == 2


async def test_register_with_registration_token() -> None:
    async with running_sim() as sim, httpx.AsyncClient() as client:
        inst = sim.instances["a"]
        anon = Rpc(sim, client, auth=False)
        resp = await anon.call("Register", {"name": "r", "token": "wrong"})
        assert resp.status_code == 400
        assert resp.json() == {
            "code": "invalid_argument",
            "message": "runner registration token not found",
        }
        resp = await anon.call("Register", {"token": inst.registration_token})
        assert resp.json()["message"] == "missing runner token, name"
        got = await anon.ok(
            "Register",
            {
                "name": "r2",
                "token": inst.registration_token,
                "version": "v1",
                "labels": ["sim", "gpu"],
            },
        )
        runner = got["runner"]
        assert len(runner["token"]) == 40 and int(runner["token"], 16) >= 0
        assert runner["uuid"] and runner["name"] == "r2" and runner["labels"] == ["sim", "gpu"]
        assert isinstance(runner["id"], str)
        # the new credentials authenticate; the pre-provisioned runner still does too
        new = Rpc(sim, client, auth=False)
        new.headers = {"x-runner-uuid": runner["uuid"], "x-runner-token": runner["token"]}
        assert (await new.call("FetchTask", {})).status_code == 200
        assert (await Rpc(sim, client).call("FetchTask", {})).status_code == 200


async def test_declare_replaces_labels_and_hides_the_token() -> None:
    async with running_sim() as sim, httpx.AsyncClient() as client:
        rpc = Rpc(sim, client)
        inst = sim.instances["a"]
        job = inst.add_job(runs_on=("sim", "gpu"))
        assert "task" not in await rpc.fetch()
        got = await rpc.ok("Declare", {"version": "12.8.0", "labels": ["sim:host", "gpu"]})
        runner = got["runner"]
        assert "token" not in runner
        assert runner["uuid"] == inst.runner.uuid
        assert runner["version"] == "12.8.0" and runner["labels"] == ["sim:host", "gpu"]
        assert inst.runner.labels == ["sim:host", "gpu"]
        # label names are the part before ":" — the job now matches
        got = await rpc.fetch()
        assert got["task"]["id"] == str(inst.task_for_job(job).id)  # type: ignore[union-attr]


async def raw_exchange(port: int, data: bytes, *, until: bytes = b"") -> bytes:
    """Send raw bytes, read until EOF (or until ``until`` shows up)."""
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    async with stream:
        await stream.send_all(data)
        out = b""
        with trio.fail_after(10):
            while chunk := await stream.receive_some(65536):
                out += chunk
                if until and until in out:
                    break
        return out


def raw_request(path: str, body: bytes, *extra: str) -> bytes:
    head = [
        f"POST {path} HTTP/1.1",
        "host: x",
        "content-type: application/json",
        f"content-length: {len(body)}",
        *extra,
    ]
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


async def test_raw_http_edge_cases() -> None:
    async with running_sim() as sim:
        assert sim.address is not None
        port = sim.address[1]
        ping = "/a/api/actions/ping.v1.PingService/Ping"
        # garbage → 400 and close
        out = await raw_exchange(port, b"NOT HTTP\r\n\r\n")
        assert out.startswith(b"HTTP/1.1 400")
        # Expect: 100-continue gets the interim answer before the body is sent
        full = raw_request(ping, b'{"data":"x"}', "expect: 100-continue")
        head, body = full.split(b"\r\n\r\n", 1)
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        async with stream:
            await stream.send_all(head + b"\r\n\r\n")
            with trio.fail_after(5):
                interim = await stream.receive_some(65536)
            assert interim.startswith(b"HTTP/1.1 100")
            await stream.send_all(body)
            with trio.fail_after(5):
                answer = await stream.receive_some(65536)
            assert b"200" in answer.split(b"\r\n", 1)[0] and answer.endswith(b'Hello, x!"}')
        # two pipelined requests on one connection, then Connection: close
        both = raw_request(ping, b'{"data":"1"}') + raw_request(
            ping, b'{"data":"2"}', "connection: close"
        )
        out = await raw_exchange(port, both)
        assert out.count(b"HTTP/1.1 200") == 2 and b"Hello, 1!" in out and b"Hello, 2!" in out
        assert sim.http.errors == []
