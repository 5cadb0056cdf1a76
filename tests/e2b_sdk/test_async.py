"""The unmodified E2B Python SDK (async API) against Warren."""

import pytest
from e2b import AsyncSandbox


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
