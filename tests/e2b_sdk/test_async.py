"""The unmodified E2B Python SDK (async API) against Warren."""

import asyncio
import time

import pytest
import pytest_asyncio
from e2b import AsyncSandbox, CommandExitException, PtySize, SandboxException, TimeoutException
from e2b.sandbox.filesystem.filesystem import WriteEntry


@pytest_asyncio.fixture
async def sb():
    s = await AsyncSandbox.create(timeout=120)
    yield s
    await s.kill()


@pytest.mark.asyncio
async def test_async_create_run_files_kill():
    sb = await AsyncSandbox.create()
    try:
        r = await sb.commands.run("python3 -c 'print(6*7)'")
        assert r.stdout == "42\n"
        await sb.files.write("/tmp/x.txt", "async")
        assert await sb.files.read("/tmp/x.txt") == "async"
        assert [e.name for e in await sb.files.list("/tmp")] == ["x.txt"]
    finally:
        assert await sb.kill()


@pytest.mark.asyncio
async def test_async_lifecycle_list_info_timeout_pause_connect():
    s = await AsyncSandbox.create(metadata={"suite": "sdk-async"}, envs={"A": "1"})
    try:
        info = await s.get_info()
        assert info.sandbox_id == s.sandbox_id and info.metadata == {"suite": "sdk-async"}
        page = await AsyncSandbox.list(query=None).next_items()
        assert s.sandbox_id in [x.sandbox_id for x in page]
        await s.set_timeout(60)
        await s.commands.run("echo kept > /tmp/state")
        await s.pause()
        assert (await AsyncSandbox.get_info(s.sandbox_id)).state.value == "paused"
        again = await AsyncSandbox.connect(s.sandbox_id)
        assert (await again.commands.run("cat /tmp/state; echo $A")).stdout == "kept\n1\n"
        assert await s.get_metrics()
    finally:
        assert await s.kill()
    assert not await AsyncSandbox.kill(s.sandbox_id)


@pytest.mark.asyncio
async def test_async_commands_exit_env_cwd_user_timeout(sb):
    r = await sb.commands.run("echo out; echo err >&2")
    assert (r.stdout, r.stderr, r.exit_code) == ("out\n", "err\n", 0)
    with pytest.raises(CommandExitException) as e:
        await sb.commands.run("exit 3")
    assert e.value.exit_code == 3
    assert (await sb.commands.run("echo $B", envs={"B": "2"})).stdout == "2\n"
    assert (await sb.commands.run("pwd", cwd="/tmp")).stdout == "/tmp\n"
    assert (await sb.commands.run("id -un", user="root")).stdout == "root\n"
    with pytest.raises(TimeoutException):
        await sb.commands.run("sleep 5", timeout=1)


@pytest.mark.asyncio
async def test_async_background_stdin_connect_kill_list(sb):
    out = []
    h = await sb.commands.run("cat", background=True, stdin=True, on_stdout=out.append)
    assert h.pid in [p.pid for p in await sb.commands.list()]
    await sb.commands.send_stdin(h.pid, "hello\n")
    await sb.commands.close_stdin(h.pid)
    assert (await h.wait()).exit_code == 0
    assert "".join(out) == "hello\n"
    late = await sb.commands.run("sleep 1; echo done", background=True)
    assert (await (await sb.commands.connect(late.pid)).wait()).stdout == "done\n"
    victim = await sb.commands.run("sleep 60", background=True)
    assert await sb.commands.kill(victim.pid)
    with pytest.raises(CommandExitException):
        await victim.wait()


@pytest.mark.asyncio
async def test_async_files_many_depth_info_rename_watch_gzip_metadata(sb):
    written = await sb.files.write_files([WriteEntry(path="/tmp/m/1", data="1"), WriteEntry(path="/tmp/m/2", data=b"2")])
    assert sorted(w.path for w in written) == ["/tmp/m/1", "/tmp/m/2"]
    listed = [e.path for e in await sb.files.list("/tmp", depth=2)]
    assert [p for p in listed if p.startswith("/tmp/m")] == ["/tmp/m", "/tmp/m/1", "/tmp/m/2"]
    assert await sb.files.exists("/tmp/m/1") and not await sb.files.exists("/tmp/nope")
    assert await sb.files.make_dir("/tmp/d") and not await sb.files.make_dir("/tmp/d")
    assert (await sb.files.rename("/tmp/m/1", "/tmp/m/3")).path == "/tmp/m/3"
    assert (await sb.files.get_info("/tmp/m/3")).size == 1
    await sb.files.remove("/tmp/m")
    assert not await sb.files.exists("/tmp/m/3")

    body = "zip me\n" * 3000
    await sb.files.write("/tmp/g.txt", body, gzip=True)
    assert await sb.files.read("/tmp/g.txt", gzip=True) == body
    w = await sb.files.write("/tmp/meta.txt", "x", metadata={"Kind": "note"})
    assert w.metadata == {"kind": "note"}
    assert (await sb.files.get_info("/tmp/meta.txt")).metadata == {"kind": "note"}

    events = []
    watcher = await sb.files.watch_dir("/tmp/d", on_event=events.append)
    await sb.files.write("/tmp/d/new", "n")
    deadline = time.monotonic() + 5
    while not any(e.name == "new" for e in events) and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    await watcher.stop()
    assert "new" in [e.name for e in events]


@pytest.mark.asyncio
async def test_async_pty_input_resize_kill(sb):
    out = []
    pty = await sb.pty.create(PtySize(rows=24, cols=80), on_data=out.append)
    await sb.pty.resize(pty.pid, PtySize(rows=30, cols=100))
    await sb.pty.send_stdin(pty.pid, b"stty size; echo PTY$((1+1)); exit\n")
    try:
        await pty.wait()
    except CommandExitException:
        pass
    text = b"".join(out)
    assert b"PTY2" in text and b"30 100" in text
    other = await sb.pty.create(PtySize(rows=24, cols=80), on_data=lambda _: None)
    assert await sb.pty.kill(other.pid)


@pytest.mark.asyncio
async def test_async_many_sandboxes_at_once():
    boxes = await asyncio.gather(*(AsyncSandbox.create() for _ in range(4)))
    try:
        outs = await asyncio.gather(*(b.commands.run(f"echo {i}") for i, b in enumerate(boxes)))
        assert [o.stdout for o in outs] == [f"{i}\n" for i in range(4)]
    finally:
        await asyncio.gather(*(b.kill() for b in boxes))


@pytest.mark.asyncio
async def test_async_fork(sb):
    await sb.files.write("/home/user/a.txt", "from the source")
    (clone,) = await sb.fork(count=1, timeout=30)
    try:
        assert await clone.files.read("/home/user/a.txt") == "from the source"
    finally:
        await clone.kill()


@pytest.mark.asyncio
async def test_async_snapshot(sb):
    await sb.files.write("/home/user/a.txt", "kept")
    info = await sb.create_snapshot(mode="filesystem")
    child = await AsyncSandbox.create(info.snapshot_id)
    try:
        assert await child.files.read("/home/user/a.txt") == "kept"
    finally:
        await child.kill()
    assert await AsyncSandbox.delete_snapshot(info.snapshot_id)
