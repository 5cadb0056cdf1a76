// The unmodified E2B JS SDK against a running Warren: create, run, write, read, kill.
// Needs E2B_API_KEY, E2B_API_URL and E2B_SANDBOX_URL (scripts/test.sh sets them).
import assert from 'node:assert/strict'
import { Sandbox } from 'e2b'

const sb = await Sandbox.create()
try {
  const r = await sb.commands.run('python3 -c "print(6*7)"')
  assert.equal(r.stdout, '42\n')
  assert.equal(r.exitCode, 0)
  await sb.files.write('/home/user/js.txt', 'from js')
  assert.equal(await sb.files.read('/home/user/js.txt'), 'from js')
  const listed = await Sandbox.list().nextItems()
  assert.ok(listed.some((s) => s.sandboxId === sb.sandboxId))
} finally {
  assert.equal(await sb.kill(), true)
}
console.log('e2b js smoke: ok')
