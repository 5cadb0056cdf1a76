// The unmodified E2B JS SDK against a running Warren: commands (exit codes, env, cwd, user, timeout,
// background with stdin, connect, kill), files (many, bytes, list depth, info, make_dir, rename,
// remove, watch), PTY, info, timeout, pause and connect, metrics, host names, an unknown id.
// Needs E2B_API_KEY, E2B_API_URL and E2B_SANDBOX_URL (the Python suite's fixture sets them).
import assert from 'node:assert/strict'
import { Sandbox, CommandExitError, NotFoundError, TimeoutError } from 'e2b'

const step = (s) => console.log('step:', s)
const sb = await Sandbox.create({ metadata: { suite: 'js' }, envs: { A: '1' } })
try {
  step('exit codes'); 
  await assert.rejects(sb.commands.run('exit 3'), (e) => e instanceof CommandExitError && e.exitCode === 3)
  step('env cwd user')
  assert.equal((await sb.commands.run('echo $A $B', { envs: { B: '2' } })).stdout, '1 2\n')
  assert.equal((await sb.commands.run('pwd', { cwd: '/tmp' })).stdout, '/tmp\n')
  assert.equal((await sb.commands.run('id -un', { user: 'root' })).stdout, 'root\n')
  step('timeout')
  await assert.rejects(sb.commands.run('sleep 5', { timeoutMs: 500 }), (e) => e instanceof TimeoutError || /timeout|deadline/i.test(String(e)))
  step('background + stdin + connect + kill')
  const out = []
  const h = await sb.commands.run('cat', { background: true, stdin: true, onStdout: (d) => out.push(d) })
  assert.ok((await sb.commands.list()).some((p) => p.pid === h.pid))
  await sb.commands.sendStdin(h.pid, 'hello\n')
  await sb.commands.closeStdin(h.pid)
  assert.equal((await h.wait()).exitCode, 0)
  assert.equal(out.join(''), 'hello\n')
  const late = await sb.commands.run('sleep 1; echo done', { background: true })
  const again = await sb.commands.connect(late.pid)
  assert.equal((await again.wait()).stdout, 'done\n')
  const k = await sb.commands.run('sleep 30', { background: true })
  assert.equal(await sb.commands.kill(k.pid), true)
  step('files')
  await sb.files.write([{ path: '/home/user/d/a.txt', data: 'A' }, { path: '/home/user/d/b.bin', data: new Uint8Array([1, 2, 3]).buffer }])
  assert.deepEqual(new Uint8Array(await sb.files.read('/home/user/d/b.bin', { format: 'bytes' })), new Uint8Array([1, 2, 3]))
  const entries = await sb.files.list('/home/user', { depth: 2 })
  assert.ok(entries.some((e) => e.path === '/home/user/d/a.txt'))
  assert.equal(await sb.files.exists('/home/user/d/none'), false)
  const info = await sb.files.getInfo('/home/user/d/a.txt')
  assert.equal(info.size, 1)
  assert.equal(await sb.files.makeDir('/home/user/e'), true)
  await sb.files.rename('/home/user/d/a.txt', '/home/user/e/a.txt')
  await sb.files.remove('/home/user/e/a.txt')
  await assert.rejects(sb.files.read('/home/user/e/a.txt'), (e) => e instanceof NotFoundError)
  step('watch')
  const events = []
  const w = await sb.files.watchDir('/home/user/e', (ev) => events.push(ev))
  await sb.files.write('/home/user/e/new.txt', 'x')
  const until = Date.now() + 5000
  while (!events.some((e) => e.name === 'new.txt') && Date.now() < until) await new Promise((r) => setTimeout(r, 50))
  await w.stop()
  assert.ok(events.some((e) => e.name === 'new.txt'), JSON.stringify(events))
  step('pty')
  let ptyOut = ''
  const p = await sb.pty.create({ cols: 80, rows: 24, onData: (d) => { ptyOut += new TextDecoder().decode(d) } })
  await sb.pty.resize(p.pid, { cols: 100, rows: 30 })
  await sb.pty.sendInput(p.pid, new TextEncoder().encode('stty size; echo MARK$((6*7))\n'))
  const u2 = Date.now() + 5000
  while (!ptyOut.includes('MARK42') && Date.now() < u2) await new Promise((r) => setTimeout(r, 50))
  assert.ok(ptyOut.includes('30 100'), ptyOut)
  await sb.pty.kill(p.pid)
  step('info, timeout, metrics, connect, pause')
  const i = await sb.getInfo()
  assert.equal(i.metadata.suite, 'js')
  await sb.setTimeout(60_000)
  await sb.files.write('/home/user/state.txt', 'kept')
  await sb.pause()
  const back = await Sandbox.connect(sb.sandboxId)
  assert.equal(await back.files.read('/home/user/state.txt'), 'kept')
  const m = await back.getMetrics()
  assert.ok(m.length > 0)
  step('host')
  assert.ok(sb.getHost(8080).startsWith('8080-' + sb.sandboxId))
} finally {
  assert.equal(await sb.kill(), true)
}
step('unknown sandbox')
await assert.rejects(Sandbox.connect('inotthere'), (e) => e instanceof NotFoundError || /not found/i.test(String(e)))
console.log('e2b js suite: ok')
