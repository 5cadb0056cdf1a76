//! Directory watching with inotify: the `WatchDir` stream and the polling watchers
//! (`CreateWatcher` / `GetWatcherEvents` / `RemoveWatcher`).

use std::collections::HashMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use bytes::Bytes;
use futures_util::StreamExt;
use http::Response;
use inotify::{EventMask, Inotify, WatchDescriptor, WatchMask};
use tokio::sync::mpsc;
use warren_protocol::connect::{Code, Error};
use warren_protocol::filesystem::{EventType, FilesystemEvent, WatchDirRequest, WatchDirResponse};
use warren_protocol::process::Empty;

use crate::fs;
use crate::server::{channel_stream, stream_error, Body, StreamOpts};
use crate::users::User;

const MASK: WatchMask = WatchMask::CREATE
    .union(WatchMask::MODIFY)
    .union(WatchMask::DELETE)
    .union(WatchMask::MOVED_FROM)
    .union(WatchMask::MOVED_TO)
    .union(WatchMask::ATTRIB)
    .union(WatchMask::CLOSE_WRITE);

struct Watch {
    inotify: Option<Inotify>,
    watches: inotify::Watches,
    dirs: HashMap<WatchDescriptor, PathBuf>,
    root: PathBuf,
    recursive: bool,
    include_entry: bool,
}

fn open(req: &WatchDirRequest, user: &User) -> Result<Watch, Error> {
    let root = fs::resolve(&req.path, user)?;
    let md = std::fs::metadata(&root).map_err(|e| fs::io_error(&e, &root))?;
    if !md.is_dir() {
        return Err(Error::new(Code::InvalidArgument, format!("path {} is not a directory", root.display())));
    }
    let inotify = Inotify::init().map_err(|e| Error::new(Code::Internal, format!("inotify: {e}")))?;
    let watches = inotify.watches();
    let mut w = Watch {
        inotify: Some(inotify),
        watches,
        dirs: HashMap::new(),
        root: root.clone(),
        recursive: req.recursive,
        include_entry: req.include_entry,
    };
    w.add(&root)?;
    Ok(w)
}

impl Watch {
    fn add(&mut self, dir: &Path) -> Result<(), Error> {
        self.add_collecting(dir, &mut None)
    }

    /// Watches `dir` (and, recursively, its subdirectories); with `found`, also collects what
    /// they already hold.
    fn add_collecting(&mut self, dir: &Path, found: &mut Option<Vec<PathBuf>>) -> Result<(), Error> {
        let wd = self.watches.add(dir, MASK).map_err(|e| fs::io_error(&e, dir))?;
        self.dirs.insert(wd, dir.to_owned());
        if self.recursive {
            if let Ok(rd) = std::fs::read_dir(dir) {
                for e in rd.flatten() {
                    if let Some(f) = found.as_mut().filter(|f| f.len() < 10_000) {
                        f.push(e.path());
                    }
                    if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                        let _ = self.add_collecting(&e.path(), found);
                    }
                }
            }
        }
        Ok(())
    }

    fn event(&self, full: &Path, event_type: EventType) -> FilesystemEvent {
        let rel = full.strip_prefix(&self.root).unwrap_or(full).display().to_string();
        let entry = if self.include_entry { fs::entry(full).ok() } else { None };
        FilesystemEvent { name: rel, event_type, entry }
    }

    fn translate(&mut self, wd: &WatchDescriptor, mask: EventMask, name: Option<&OsString>) -> Vec<FilesystemEvent> {
        let Some(dir) = self.dirs.get(wd).cloned() else { return Vec::new() };
        let Some(name) = name else { return Vec::new() };
        let full = dir.join(name);
        let event_type = if mask.contains(EventMask::CREATE) || mask.contains(EventMask::MOVED_TO) {
            if mask.contains(EventMask::ISDIR) && self.recursive {
                // What was created in the new directory before its watch existed would go
                // unreported: report it now (after the directory itself).
                let mut found = Some(Vec::new());
                let _ = self.add_collecting(&full, &mut found);
                let mut out = vec![self.event(&full, EventType::Create)];
                out.extend(found.unwrap_or_default().iter().map(|p| self.event(p, EventType::Create)));
                return out;
            }
            EventType::Create
        } else if mask.contains(EventMask::DELETE) {
            EventType::Remove
        } else if mask.contains(EventMask::MOVED_FROM) {
            EventType::Rename
        } else if mask.contains(EventMask::ATTRIB) {
            EventType::Chmod
        } else if mask.contains(EventMask::MODIFY) {
            EventType::Write
        } else {
            return Vec::new();
        };
        vec![self.event(&full, event_type)]
    }
}

/// Runs a watch, sending each event to `tx` until it closes.
async fn pump(mut w: Watch, tx: impl Fn(FilesystemEvent) -> bool) {
    let buf = vec![0u8; 16 * 1024];
    let Some(inotify) = w.inotify.take() else { return };
    let Ok(mut stream) = inotify.into_event_stream(buf) else { return };
    while let Some(Ok(ev)) = stream.next().await {
        for fe in w.translate(&ev.wd, ev.mask, ev.name.as_ref()) {
            if !tx(fe) {
                return;
            }
        }
    }
}

pub async fn watch_dir(req: WatchDirRequest, user: User, opts: StreamOpts) -> Response<Body> {
    let (codec, message, keepalive) = (opts.codec, opts.message, opts.keepalive);
    let r = req.clone();
    let w = match fs::run_as(user.clone(), move || open(&r, &user)).await {
        Ok(w) => w,
        Err(e) => return stream_error(e),
    };
    let (tx, rx) = mpsc::channel::<Bytes>(256);
    let _ = tx.try_send(codec.envelope(message, &WatchDirResponse::Start(Empty {})));
    let tx2 = tx.clone();
    tokio::spawn(pump(w, move |fe| {
        tx2.try_send(codec.envelope(message, &WatchDirResponse::Filesystem(Box::new(fe))))
            .map(|_| true)
            .unwrap_or_else(|e| matches!(e, mpsc::error::TrySendError::Full(_)))
    }));
    if let Some(every) = keepalive {
        tokio::spawn(async move {
            let mut i = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
            loop {
                i.tick().await;
                if tx.send(codec.envelope(message, &WatchDirResponse::Keepalive(Empty {}))).await.is_err() {
                    return;
                }
            }
        });
    }
    channel_stream(rx, codec)
}

type Watchers = Mutex<HashMap<String, (Arc<Mutex<Vec<FilesystemEvent>>>, tokio::task::JoinHandle<()>)>>;

fn watchers() -> &'static Watchers {
    static W: OnceLock<Watchers> = OnceLock::new();
    W.get_or_init(Default::default)
}

pub async fn create_watcher(req: WatchDirRequest, user: User) -> Result<String, Error> {
    let r = req.clone();
    let w = fs::run_as(user.clone(), move || open(&r, &user)).await?;
    let events = Arc::new(Mutex::new(Vec::new()));
    let sink = events.clone();
    let task = tokio::spawn(pump(w, move |fe| {
        let mut v = sink.lock().unwrap();
        // Bounded: a watcher nobody polls must not grow without limit.
        if v.len() < 100_000 {
            v.push(fe);
        }
        true
    }));
    let mut b = [0u8; 12];
    // SAFETY: getrandom writes at most b.len() bytes.
    unsafe { libc::getrandom(b.as_mut_ptr() as *mut libc::c_void, b.len(), 0) };
    let id: String = b.iter().map(|x| format!("{x:02x}")).collect();
    watchers().lock().unwrap().insert(id.clone(), (events, task));
    Ok(id)
}

pub fn take_events(id: &str) -> Result<Vec<FilesystemEvent>, Error> {
    let w = watchers().lock().unwrap();
    let (events, _) = w.get(id).ok_or_else(|| Error::new(Code::NotFound, format!("watcher {id} does not exist")))?;
    let taken = std::mem::take(&mut *events.lock().unwrap());
    Ok(taken)
}

pub fn remove_watcher(id: &str) -> Result<(), Error> {
    let (_, task) = watchers()
        .lock()
        .unwrap()
        .remove(id)
        .ok_or_else(|| Error::new(Code::NotFound, format!("watcher {id} does not exist")))?;
    task.abort();
    Ok(())
}
