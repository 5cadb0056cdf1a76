"""The unmodified E2B Python SDK (sync API) against Warren."""

import json
import os
import time
import urllib.error
import urllib.request

import pytest
from e2b import CommandExitException, PtySize, Sandbox, SandboxException, TimeoutException
from e2b.sandbox.filesystem.filesystem import WriteEntry


@pytest.fixture
def sb():
    s = Sandbox.create(timeout=120)
    yield s
    s.kill()


def test_lifecycle_create_list_info_timeout_connect_kill():
    s = Sandbox.create(metadata={"suite": "sdk-sync"}, envs={"A": "1"})
    assert s.is_running()
    info = s.get_info()
    assert info.sandbox_id == s.sandbox_id and info.metadata == {"suite": "sdk-sync"}
    listed = [x.sandbox_id for x in Sandbox.list().next_items()]
    assert s.sandbox_id in listed
    s.set_timeout(60)
    again = Sandbox.connect(s.sandbox_id)
    assert again.commands.run("echo $A").stdout == "1\n"
    metrics = s.get_metrics()
    assert metrics and metrics[-1].mem_total > 0
    assert s.kill()
    assert not Sandbox.kill(s.sandbox_id)


def test_commands_output_exit_env_cwd_user(sb):
    r = sb.commands.run("echo out; echo err >&2")
    assert (r.stdout, r.stderr, r.exit_code) == ("out\n", "err\n", 0)
    with pytest.raises(CommandExitException) as e:
        sb.commands.run("exit 3")
    assert e.value.exit_code == 3
    assert sb.commands.run("echo $B", envs={"B": "2"}).stdout == "2\n"
    assert sb.commands.run("pwd", cwd="/tmp").stdout == "/tmp\n"
    assert sb.commands.run("id -un", user="root").stdout == "root\n"
    assert sb.commands.run("id -un").stdout == "user\n"
    with pytest.raises(CommandExitException) as e:
        sb.commands.run("no-such-command")
    assert e.value.exit_code == 127


def test_command_timeout_background_stdin_connect_kill_list(sb):
    with pytest.raises(TimeoutException):
        sb.commands.run("sleep 5", timeout=1)
    h = sb.commands.run("cat", background=True, stdin=True)
    assert h.pid in [p.pid for p in sb.commands.list()]
    sb.commands.send_stdin(h.pid, "hello\n")
    sb.commands.close_stdin(h.pid)
    out = []
    assert h.wait(on_stdout=out.append).exit_code == 0
    assert "".join(out) == "hello\n"
    late = sb.commands.run("sleep 1; echo done", background=True)
    assert sb.commands.connect(late.pid).wait().stdout == "done\n"
    victim = sb.commands.run("sleep 60", background=True)
    assert sb.commands.kill(victim.pid)
    with pytest.raises(CommandExitException):
        victim.wait()
    assert victim.pid not in [p.pid for p in sb.commands.list()]


def test_files_text_bytes_many_list_info_dirs_rename_remove(sb):
    sb.files.write("/home/user/a.txt", "hello")
    assert sb.files.read("/home/user/a.txt") == "hello"
    sb.files.write("/tmp/b.bin", b"\x00\x01\x02")
    assert bytes(sb.files.read("/tmp/b.bin", format="bytes")) == b"\x00\x01\x02"
    written = sb.files.write_files([WriteEntry(path="/tmp/m/1", data="1"), WriteEntry(path="/tmp/m/2", data="2")])
    assert sorted(w.path for w in written) == ["/tmp/m/1", "/tmp/m/2"]
    assert [e.path for e in sb.files.list("/tmp", depth=2) if e.path.startswith("/tmp/m")] == ["/tmp/m", "/tmp/m/1", "/tmp/m/2"]
    info = sb.files.get_info("/home/user/a.txt")
    assert info.size == 5 and info.owner == "user"
    assert sb.files.exists("/tmp/m/1") and not sb.files.exists("/tmp/nope")
    assert sb.files.make_dir("/tmp/newdir") and not sb.files.make_dir("/tmp/newdir")
    assert sb.files.rename("/tmp/m/1", "/tmp/m/3").path == "/tmp/m/3"
    sb.files.remove("/tmp/m")
    assert not sb.files.exists("/tmp/m/3")


def test_watch_dir_events(sb):
    sb.files.make_dir("/tmp/w")
    w = sb.files.watch_dir("/tmp/w")
    sb.files.write("/tmp/w/x", "x")
    events = []
    deadline = time.monotonic() + 5
    while not events and time.monotonic() < deadline:
        events = w.get_new_events()
    w.stop()
    assert ("x", "create") in [(e.name, e.type.value) for e in events]


def test_pty_input_resize_kill(sb):
    out = []
    pty = sb.pty.create(PtySize(rows=24, cols=80))
    sb.pty.resize(pty.pid, PtySize(rows=30, cols=100))
    sb.pty.send_stdin(pty.pid, b"stty size; echo PTY$((1+1)); exit\n")
    try:
        pty.wait(on_pty=out.append)
    except CommandExitException:
        pass
    text = b"".join(out)
    assert b"PTY2" in text and b"30 100" in text
    other = sb.pty.create(PtySize(rows=24, cols=80))
    assert sb.pty.kill(other.pid)


def test_many_sandboxes_through_one_port():
    boxes = [Sandbox.create() for _ in range(5)]
    try:
        for i, b in enumerate(boxes):
            assert b.commands.run(f"echo {i}").stdout == f"{i}\n"
    finally:
        for b in boxes:
            b.kill()


def test_pause_and_connect_resumes_with_state():
    s = Sandbox.create()
    try:
        s.commands.run("echo kept > /tmp/state")
        s.pause()
        assert Sandbox.get_info(s.sandbox_id).state.value == "paused"
        resumed = Sandbox.connect(s.sandbox_id)
        assert resumed.commands.run("cat /tmp/state").stdout == "kept\n"
    finally:
        s.kill()


def test_filesystem_pause_frees_processes_and_keeps_files():
    s = Sandbox.create()
    try:
        s.files.write("/home/user/disk.txt", "on disk")
        s.commands.run("sleep 1000", background=True)
        s.pause(mode="filesystem")
        assert Sandbox.get_info(s.sandbox_id).state.value == "paused"
        resumed = Sandbox.connect(s.sandbox_id)
        assert resumed.files.read("/home/user/disk.txt") == "on disk"
        assert resumed.commands.run("pgrep -x sleep || echo gone").stdout == "gone\n"
    finally:
        s.kill()


def test_signed_file_urls(sb, warren):
    import urllib.parse
    import urllib.request

    sb.files.write("/home/user/signed.txt", "signed content")

    def fetch(url):
        # A signed URL travels without headers, so the sandbox is named by the Host
        # ({port}-{id}.{domain}), as in the SDK's direct URLs; send it to the daemon's address.
        query = urllib.parse.urlsplit(url).query
        req = urllib.request.Request(
            f"{warren['url']}/files?{query}", headers={"Host": f"49983-{sb.sandbox_id}.localhost:{warren['port']}"}
        )
        with urllib.request.urlopen(req) as r:
            return r.read()

    assert fetch(sb.download_url("/home/user/signed.txt", use_signature_expiration=60)) == b"signed content"
    tampered = sb.download_url("/home/user/signed.txt").replace("signed.txt", "other.txt", 1)
    with pytest.raises(urllib.error.HTTPError) as e:
        fetch(tampered)
    assert e.value.code == 401


def test_files_gzip_and_metadata(sb):
    body = "compressible line\n" * 2000
    sb.files.write("/tmp/g.txt", body, gzip=True)
    assert sb.files.read("/tmp/g.txt", gzip=True) == body
    assert sb.commands.run("wc -c < /tmp/g.txt").stdout.strip() == str(len(body))
    written = sb.files.write("/home/user/meta.txt", "m", metadata={"Owner": "agent-7", "run": "42"})
    assert written.metadata == {"owner": "agent-7", "run": "42"}
    assert sb.files.get_info("/home/user/meta.txt").metadata == {"owner": "agent-7", "run": "42"}
    listed = {e.name: e.metadata for e in sb.files.list("/home/user")}
    assert listed["meta.txt"] == {"owner": "agent-7", "run": "42"}
    assert sb.files.rename("/home/user/meta.txt", "/home/user/meta2.txt").metadata == {"owner": "agent-7", "run": "42"}
    assert sb.files.get_info("/tmp/g.txt").metadata is None


def _api(warren, method, path):
    req = urllib.request.Request(warren["url"] + path, method=method, headers={"X-API-KEY": warren["key"]})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, dict(r.headers), json.loads(r.read() or b"null")
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), json.loads(e.read() or b"null")


def test_logs_record_the_lifecycle_and_outlive_the_sandbox(warren):
    s = Sandbox.create()
    s.set_timeout(120)
    s.pause()
    Sandbox.connect(s.sandbox_id)
    sid = s.sandbox_id
    status, _, body = _api(warren, "GET", f"/v2/sandboxes/{sid}/logs")
    assert status == 200
    messages = [e["message"] for e in body["logs"]]
    assert "sandbox created" in messages and "sandbox paused" in messages and "sandbox resumed" in messages
    assert any(m.endswith("agent ready") for m in messages)
    s.kill()
    status, _, body = _api(warren, "GET", f"/v2/sandboxes/{sid}/logs?direction=backward&limit=1")
    assert status == 200 and body["logs"][0]["message"] == "killed on request"
    assert body["logs"][0]["fields"]["reason"] == "requested"
    status, _, v1 = _api(warren, "GET", f"/sandboxes/{sid}/logs")
    assert status == 200 and len(v1["logs"]) == len(v1["logEntries"]) >= 4
    status, _, body = _api(warren, "GET", f"/v2/sandboxes/{sid}/logs?level=warn")
    assert status == 200 and body["logs"] == []
    assert _api(warren, "GET", f"/v2/sandboxes/{sid}/logs?direction=sideways")[0] == 400
    assert _api(warren, "GET", "/v2/sandboxes/inovalidid0000000000/logs")[0] == 404


def test_fork_clones_the_disk_state_and_the_source_keeps_running(sb, warren):
    sb.files.write("/home/user/fork.txt", "before")
    clones = sb.fork(count=2, timeout=60)
    assert len(clones) == 2 and all(isinstance(c, Sandbox) for c in clones), clones
    sb.files.write("/home/user/fork.txt", "after")
    for c in clones:
        assert c.sandbox_id != sb.sandbox_id
        assert c.files.read("/home/user/fork.txt") == "before"
        assert c.commands.run("echo $WARREN_FORKED_FROM").stdout.strip() == sb.sandbox_id
        c.kill()
    assert sb.is_running() and sb.files.read("/home/user/fork.txt") == "after"
    with pytest.raises(SandboxException):
        Sandbox.fork("inovalidid0000000000")


def test_snapshots_are_templates_that_outlive_their_sandbox(sb, warren):
    sb.files.write("/home/user/snap.txt", "in the snapshot")
    info = sb.create_snapshot()
    assert info.snapshot_id and info.names == [info.snapshot_id]
    sb.files.write("/home/user/snap.txt", "changed later")
    assert [s.snapshot_id for s in sb.list_snapshots().next_items()] == [info.snapshot_id]
    child = Sandbox.create(info.snapshot_id)
    try:
        assert child.files.read("/home/user/snap.txt") == "in the snapshot"
        # In use: the snapshot cannot be deleted yet.
        status, _, body = _api(warren, "DELETE", f"/templates/{info.snapshot_id}")
        assert status == 409 and child.sandbox_id in body["message"]
    finally:
        child.kill()
    assert Sandbox.delete_snapshot(info.snapshot_id)
    assert not Sandbox.delete_snapshot(info.snapshot_id)
    # A full snapshot keeps processes and memory (gVisor; native with CRIU, which the project's
    # set-up installs), and the source keeps running.
    sb.commands.run("sleep 600", background=True)
    full = sb.create_snapshot(mode="full")
    assert full.snapshot_id
    child = Sandbox.create(full.snapshot_id)
    try:
        assert child.commands.run("pgrep -x sleep").exit_code == 0
    finally:
        child.kill()
    assert Sandbox.delete_snapshot(full.snapshot_id)
    assert sb.is_running()


def test_lifecycle_pause_on_timeout_and_resume_on_traffic():
    s = Sandbox.create(timeout=1, lifecycle={"on_timeout": "pause", "auto_resume": True})
    try:
        assert s.get_info().lifecycle == {"on_timeout": "pause", "auto_resume": True}
        s.commands.run("echo z > /tmp/z")
        deadline = time.monotonic() + 10
        while Sandbox.get_info(s.sandbox_id).state.value != "paused":
            assert time.monotonic() < deadline, "the timeout did not pause the sandbox"
            time.sleep(0.05)
        # Traffic wakes it, with its files.
        assert s.commands.run("cat /tmp/z").stdout == "z\n"
        assert Sandbox.get_info(s.sandbox_id).state.value == "running"
    finally:
        s.kill()


def test_lifecycle_pause_on_timeout_in_filesystem_mode():
    s = Sandbox.create(timeout=1, lifecycle={"on_timeout": {"action": "pause", "mode": "filesystem"}})
    try:
        s.commands.run("echo f > /home/user/f")
        s.commands.run("sleep 600", background=True)
        deadline = time.monotonic() + 10
        while Sandbox.get_info(s.sandbox_id).state.value != "paused":
            assert time.monotonic() < deadline, "the timeout did not pause the sandbox"
            time.sleep(0.05)
        back = Sandbox.connect(s.sandbox_id)
        assert back.commands.run("cat /home/user/f; pgrep -x sleep || echo gone").stdout == "f\ngone\n"
    finally:
        s.kill()


def test_get_host_reaches_a_server_inside(sb, warren):
    sb.commands.run("cd /tmp && echo inside > hi.txt && nohup python3 -m http.server 8080 >/dev/null 2>&1 &")
    host = sb.get_host(8080)
    assert host == f"8080-{sb.sandbox_id}.localhost:{warren['port']}"
    # `*.localhost` names need a resolver that knows them; send the Host to the daemon's address.
    req = urllib.request.Request(f"{warren['url']}/hi.txt", headers={"Host": host})
    deadline = time.monotonic() + 20
    while True:
        try:
            with urllib.request.urlopen(req, timeout=5) as r:
                assert r.read() == b"inside\n"
                break
        except urllib.error.HTTPError:
            assert time.monotonic() < deadline, "the server inside never answered"
            time.sleep(0.1)


def test_update_network_applies_and_refuses_domains(sb):
    sb.update_network({"deny_out": ["0.0.0.0/0"], "allow_out": ["10.0.0.0/8"]})
    with pytest.raises(SandboxException) as e:
        sb.update_network({"allow_out": ["example.com"]})
    assert "domain names are not supported" in str(e.value)
    sb.update_network({})
    assert sb.commands.run("echo still-here").stdout == "still-here\n"


def test_e2b_cloud_services_fail_at_once_with_the_reason():
    from e2b import Volume

    started = time.monotonic()
    with pytest.raises(Exception) as e:
        Volume.create("data")
    assert "not offered by Warren" in str(e.value)
    assert time.monotonic() - started < 5, "the SDK retried an answer that says it cannot succeed"


def test_list_query_template_started_after_order_and_pages():
    from datetime import datetime, timezone

    from e2b import SandboxQuery

    t0 = datetime.now(timezone.utc)
    made = [Sandbox.create(metadata={"suite": "sdk-list"}) for _ in range(3)]
    try:
        ids = [s.sandbox_id for s in made]
        q = SandboxQuery(metadata={"suite": "sdk-list"}, template="base", started_after=t0)
        pages, p = [], Sandbox.list(query=q, order="desc", limit=2)
        while p.has_next:
            pages.append([x.sandbox_id for x in p.next_items()])
        assert pages == [ids[::-1][:2], ids[::-1][2:]]
        assert Sandbox.list(query=SandboxQuery(metadata={"suite": "sdk-list"}, template="nosuch")).next_items() == []
    finally:
        for s in made:
            s.kill()


def test_connect_with_reboot_comes_back_from_the_files_alone(warren):
    s = Sandbox.create(timeout=120)
    try:
        s.commands.run("echo r > /home/user/r")
        s.commands.run("sleep 600", background=True)
        s.pause()
        req = urllib.request.Request(f"{warren['url']}/sandboxes/{s.sandbox_id}", headers={"X-API-KEY": warren["key"]})
        with urllib.request.urlopen(req, timeout=5) as r:
            saved_to_disk = json.load(r)["warrenState"] == "hibernated"
        if saved_to_disk:
            # Runtimes whose pause saves the memory to disk (gVisor) cannot come back without it
            # yet: refused with the reason, and the sandbox can still be restored.
            with pytest.raises(SandboxException) as e:
                Sandbox.connect(s.sandbox_id, on_resume="reboot")
            assert "memory saved to disk" in str(e.value)
            assert Sandbox.connect(s.sandbox_id).commands.run("cat /home/user/r").stdout == "r\n"
        else:
            back = Sandbox.connect(s.sandbox_id, on_resume="reboot")
            assert back.commands.run("cat /home/user/r; pgrep -x sleep || echo gone").stdout == "r\ngone\n"
    finally:
        s.kill()
