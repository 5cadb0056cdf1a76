//! Reading started processes' output (pipes and PTY masters) on one thread with poll(2).
//!
//! Not on the runtime's epoll: gVisor's checkpoint keeps the epoll interests of pipes that were
//! deleted from the epoll and closed before it, so the first `epoll_wait` of a restored agent
//! returns hang-ups whose tokens point at tokio registrations freed long before. tokio takes a
//! token for a live registration: the restored agent crashed when that memory was unmapped, and
//! wrote into whatever reused it otherwise. poll(2) keeps no interest in the kernel between calls,
//! so a checkpoint has nothing stale to keep. One thread serves every stream; it starts with the
//! first process and sleeps in poll(2) while no output arrives.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::mpsc;
use std::sync::OnceLock;

use tokio::sync::oneshot;

/// Where one stream's bytes go, chunk by chunk, in order.
pub type Sink = Box<dyn FnMut(Vec<u8>) + Send>;

/// Bytes read per ready stream and turn: one busy stream cannot starve the others.
const CHUNK: usize = 32 * 1024;

struct Stream {
    fd: OwnedFd,
    sink: Sink,
    done: oneshot::Sender<()>,
}

struct Reader {
    jobs: mpsc::Sender<Stream>,
    /// An eventfd the thread polls with the streams; a new stream is announced on it.
    wake: OwnedFd,
}

/// Reads `fd` (made non-blocking here) until its end (EOF, or EIO from a PTY master whose last
/// slave closed) or an error, hands each chunk to `sink`, then closes `fd`. The receiver
/// completes at that end (or at once, with an error, when the reader thread cannot run).
pub fn read(fd: OwnedFd, sink: Sink) -> oneshot::Receiver<()> {
    let (done, finished) = oneshot::channel();
    // SAFETY: fcntl on a descriptor we own.
    unsafe {
        let flags = libc::fcntl(fd.as_raw_fd(), libc::F_GETFL);
        libc::fcntl(fd.as_raw_fd(), libc::F_SETFL, flags | libc::O_NONBLOCK);
    }
    let Some(reader) = reader() else { return finished };
    if reader.jobs.send(Stream { fd, sink, done }).is_ok() {
        let one: u64 = 1;
        // SAFETY: an 8-byte write to our eventfd (it cannot block: the counter is far from full).
        unsafe { libc::write(reader.wake.as_raw_fd(), &one as *const u64 as *const libc::c_void, 8) };
    }
    finished
}

fn reader() -> Option<&'static Reader> {
    static READER: OnceLock<Option<Reader>> = OnceLock::new();
    READER
        .get_or_init(|| match start() {
            Ok(r) => Some(r),
            Err(e) => {
                crate::log("error", &format!("cannot start the output reader: {e}; process output is lost"));
                None
            }
        })
        .as_ref()
}

fn start() -> io::Result<Reader> {
    // SAFETY: eventfd returns a new descriptor or -1.
    let raw = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
    if raw < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `raw` is a fresh descriptor nobody else owns.
    let wake = unsafe { OwnedFd::from_raw_fd(raw) };
    let thread_wake = wake.try_clone()?;
    let (jobs, incoming) = mpsc::channel();
    std::thread::Builder::new()
        .name("output".into())
        // The loop needs little stack; the chunk buffer lives on the heap.
        .stack_size(128 * 1024)
        .spawn(move || serve(thread_wake, incoming))?;
    Ok(Reader { jobs, wake })
}

fn serve(wake: OwnedFd, incoming: mpsc::Receiver<Stream>) {
    let mut streams: Vec<Stream> = Vec::new();
    let mut buf = vec![0u8; CHUNK];
    let mut fds: Vec<libc::pollfd> = Vec::new();
    loop {
        fds.clear();
        fds.push(libc::pollfd { fd: wake.as_raw_fd(), events: libc::POLLIN, revents: 0 });
        fds.extend(streams.iter().map(|s| libc::pollfd { fd: s.fd.as_raw_fd(), events: libc::POLLIN, revents: 0 }));
        // SAFETY: `fds` is a valid array of `fds.len()` pollfd entries.
        let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, -1) };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                crate::log("error", &format!("output reader: poll failed: {e}"));
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            continue;
        }
        // Backwards, so that removing stream i (swap_remove) only moves one already served.
        for i in (0..streams.len()).rev() {
            if fds[i + 1].revents == 0 {
                continue;
            }
            // SAFETY: reading into our buffer from a descriptor we own.
            let got =
                unsafe { libc::read(streams[i].fd.as_raw_fd(), buf.as_mut_ptr() as *mut libc::c_void, buf.len()) };
            if got > 0 {
                (streams[i].sink)(buf[..got as usize].to_vec());
                continue;
            }
            let err = io::Error::last_os_error();
            let again = got < 0 && matches!(err.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted);
            if !again {
                // EOF, EIO (a PTY whose last slave closed) or another error: the stream is over.
                let s = streams.swap_remove(i);
                let _ = s.done.send(());
            }
        }
        if fds[0].revents != 0 {
            let mut count = 0u64;
            // SAFETY: an 8-byte read from our non-blocking eventfd.
            unsafe { libc::read(wake.as_raw_fd(), &mut count as *mut u64 as *mut libc::c_void, 8) };
            streams.extend(incoming.try_iter());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    fn collect(fd: OwnedFd) -> (Arc<Mutex<Vec<u8>>>, oneshot::Receiver<()>) {
        let got = Arc::new(Mutex::new(Vec::new()));
        let sink = got.clone();
        let done = read(fd, Box::new(move |chunk| sink.lock().unwrap().extend_from_slice(&chunk)));
        (got, done)
    }

    #[test]
    fn every_stream_is_read_to_its_end_in_order() {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let mut ends = Vec::new();
        for k in 0..5u8 {
            let (r, w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).unwrap();
            let (got, done) = collect(r);
            // More than a chunk and more than a pipe's buffer: the writer blocks until read.
            let data: Vec<u8> = (0..200_000u32).map(|i| (i as u8).wrapping_add(k)).collect();
            let expect = data.clone();
            let writer = std::thread::spawn(move || {
                let mut f = std::fs::File::from(w);
                std::io::Write::write_all(&mut f, &data).unwrap();
            });
            ends.push((got, done, expect, writer));
        }
        for (got, done, expect, writer) in ends {
            writer.join().unwrap();
            rt.block_on(done).unwrap();
            assert_eq!(*got.lock().unwrap(), expect);
        }
    }

    #[test]
    fn an_open_writer_keeps_the_stream_going_and_its_close_ends_it() {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let (r, w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).unwrap();
        let (got, mut done) = collect(r);
        nix::unistd::write(&w, b"first").unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while got.lock().unwrap().len() < 5 {
            assert!(std::time::Instant::now() < deadline, "the first chunk never arrived");
            std::thread::yield_now();
        }
        assert!(done.try_recv().is_err(), "the stream ended while its writer was open");
        nix::unistd::write(&w, b" second").unwrap();
        drop(w);
        rt.block_on(done).unwrap();
        assert_eq!(*got.lock().unwrap(), b"first second");
    }
}
