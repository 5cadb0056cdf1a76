//! Several backends behind one [`Runtime`]: each sandbox runs on the backend its spec names (or the
//! default one), and every later call about it goes to that backend. Calls carrying a [`Handle`]
//! are routed by the handle (it survives restarts); calls with only an id by what `create` or
//! `reattach` recorded. Layers live in one store shared by all backends, so layer calls may go to
//! any of them.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};

use warren_types::SandboxId;

use crate::{Capabilities, ExitWatch, Handle, Runtime, RuntimeError, SandboxSpec, Stats};

pub struct Runtimes {
    /// The default backend first.
    backends: Vec<Arc<dyn Runtime>>,
    by_id: RwLock<HashMap<SandboxId, usize>>,
}

impl Runtimes {
    /// `backends[0]` is the default.
    pub fn new(backends: Vec<Arc<dyn Runtime>>) -> Runtimes {
        assert!(!backends.is_empty(), "at least one backend");
        Runtimes { backends, by_id: RwLock::new(HashMap::new()) }
    }

    fn index(&self, name: &str) -> Option<usize> {
        self.backends.iter().position(|b| b.name() == name)
    }

    fn of_handle(&self, h: &Handle) -> &Arc<dyn Runtime> {
        &self.backends[self.index(&h.backend).unwrap_or(0)]
    }

    fn of_id(&self, id: &SandboxId) -> &Arc<dyn Runtime> {
        let i = self.by_id.read().unwrap().get(id).copied().unwrap_or(0);
        &self.backends[i]
    }

    /// The backend a spec names (the default one when it names none), remembered for its id.
    fn pick(&self, spec: &SandboxSpec) -> Result<usize, RuntimeError> {
        let i = match spec.runtime.as_deref() {
            None => 0,
            Some(n) => self.index(n).ok_or(RuntimeError::Unsupported {
                backend: "select",
                op: "run a sandbox on a runtime this daemon does not have",
            })?,
        };
        self.by_id.write().unwrap().insert(spec.id.clone(), i);
        Ok(i)
    }

    /// Forgets a sandbox whose start failed.
    fn unpick<T>(&self, id: &SandboxId, r: Result<T, RuntimeError>) -> Result<T, RuntimeError> {
        if r.is_err() {
            self.by_id.write().unwrap().remove(id);
        }
        r
    }

    fn remember(&self, id: &SandboxId, backend: &str) {
        if let Some(i) = self.index(backend) {
            self.by_id.write().unwrap().insert(id.clone(), i);
        }
    }

    /// Every backend, when nothing says which one ran the sandbox (cleanup is idempotent).
    fn each<T>(
        &self,
        id: &SandboxId,
        handle: Option<&Handle>,
        f: impl Fn(&Arc<dyn Runtime>) -> Result<T, RuntimeError>,
    ) -> Result<T, RuntimeError> {
        if let Some(h) = handle {
            return f(self.of_handle(h));
        }
        if let Some(&i) = self.by_id.read().unwrap().get(id) {
            return f(&self.backends[i]);
        }
        let mut last = None;
        for b in self.backends.iter().rev() {
            last = Some(f(b));
        }
        last.expect("at least one backend")
    }
}

impl Runtime for Runtimes {
    fn name(&self) -> &'static str {
        self.backends[0].name()
    }

    fn capabilities(&self) -> Capabilities {
        self.backends[0].capabilities()
    }

    fn backend_capabilities(&self, name: Option<&str>) -> Option<Capabilities> {
        match name {
            None => Some(self.backends[0].capabilities()),
            Some(n) => self.index(n).map(|i| self.backends[i].capabilities()),
        }
    }

    fn backends(&self) -> Vec<&'static str> {
        self.backends.iter().map(|b| b.name()).collect()
    }

    fn create(&self, spec: &SandboxSpec) -> Result<Handle, RuntimeError> {
        let i = self.pick(spec)?;
        self.unpick(&spec.id, self.backends[i].create(spec))
    }

    fn stop(&self, id: &SandboxId, handle: Option<&Handle>) -> Result<(), RuntimeError> {
        self.each(id, handle, |b| b.stop(id, handle))
    }

    fn destroy(&self, id: &SandboxId, handle: Option<&Handle>) -> Result<(), RuntimeError> {
        let r = self.each(id, handle, |b| b.destroy(id, handle));
        if r.is_ok() {
            self.by_id.write().unwrap().remove(id);
        }
        r
    }

    fn halt(&self, id: &SandboxId, handle: Option<&Handle>) -> Result<(), RuntimeError> {
        self.each(id, handle, |b| b.halt(id, handle))
    }

    fn freeze(&self, id: &SandboxId) -> Result<(), RuntimeError> {
        self.of_id(id).freeze(id)
    }

    fn set_egress(
        &self,
        id: &SandboxId,
        handle: &Handle,
        allow: &[(std::net::Ipv4Addr, u8)],
        deny: &[(std::net::Ipv4Addr, u8)],
    ) -> Result<(), RuntimeError> {
        self.of_handle(handle).set_egress(id, handle, allow, deny)
    }

    fn set_cpu(&self, id: &SandboxId, cpu_count: u32) -> Result<(), RuntimeError> {
        self.of_id(id).set_cpu(id, cpu_count)
    }

    fn thaw(&self, id: &SandboxId) -> Result<(), RuntimeError> {
        self.of_id(id).thaw(id)
    }

    fn stats(&self, id: &SandboxId, handle: &Handle) -> Result<Stats, RuntimeError> {
        self.of_handle(handle).stats(id, handle)
    }

    fn sample(&self, id: &SandboxId, handle: &Handle, with_cache: bool) -> Result<Stats, RuntimeError> {
        self.of_handle(handle).sample(id, handle, with_cache)
    }

    fn reattach(&self, id: &SandboxId, handle: &Handle) -> Option<ExitWatch> {
        self.remember(id, &handle.backend);
        self.of_handle(handle).reattach(id, handle)
    }

    fn watch(&self, id: &SandboxId, handle: &Handle) -> Result<ExitWatch, RuntimeError> {
        self.of_handle(handle).watch(id, handle)
    }

    fn sweep(&self, live: &[SandboxId]) -> Vec<SandboxId> {
        // Non-default backends first: theirs may hold mounts over layers the default one removes.
        let mut swept: Vec<SandboxId> = Vec::new();
        for b in self.backends.iter().rev() {
            swept.extend(b.sweep(live));
        }
        swept.sort_by(|a, b| a.as_str().cmp(b.as_str()));
        swept.dedup();
        swept
    }

    fn freeze_layer(&self, id: &SandboxId, layer: &str) -> Result<PathBuf, RuntimeError> {
        self.of_id(id).freeze_layer(id, layer)
    }

    fn layer_path(&self, layer: &str) -> PathBuf {
        self.backends[0].layer_path(layer)
    }

    fn remove_layer(&self, layer: &str) -> Result<(), RuntimeError> {
        self.backends[0].remove_layer(layer)
    }

    fn layers(&self) -> Vec<String> {
        self.backends[0].layers()
    }

    fn log_tail(&self, id: &SandboxId, max_bytes: u64) -> (Vec<u8>, bool) {
        self.of_id(id).log_tail(id, max_bytes)
    }

    fn checkpoint(&self, id: &SandboxId, handle: &Handle) -> Result<u64, RuntimeError> {
        self.of_handle(handle).checkpoint(id, handle)
    }

    fn restore(&self, spec: &SandboxSpec) -> Result<Handle, RuntimeError> {
        // A failed wake leaves the sandbox paused on this backend: it stays remembered.
        let i = self.pick(spec)?;
        self.backends[i].restore(spec)
    }

    fn checkpoint_copy(&self, id: &SandboxId, handle: &Handle, image: &str) -> Result<u64, RuntimeError> {
        self.of_handle(handle).checkpoint_copy(id, handle, image)
    }

    fn restore_copy(&self, spec: &SandboxSpec, image: &str) -> Result<Handle, RuntimeError> {
        let i = self.pick(spec)?;
        self.unpick(&spec.id, self.backends[i].restore_copy(spec, image))
    }

    fn take_agent_listener(&self, id: &SandboxId) -> Option<std::os::unix::net::UnixListener> {
        self.of_id(id).take_agent_listener(id)
    }

    fn remove_image(&self, image: &str) {
        for b in &self.backends {
            b.remove_image(image);
        }
    }

    fn images(&self) -> Vec<String> {
        self.backends.iter().flat_map(|b| b.images()).collect()
    }
}
