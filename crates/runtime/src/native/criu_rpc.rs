//! CRIU's RPC protocol (`criu swrk`), as far as Warren drives it: a restore request, and the
//! notifications CRIU sends at each stage of it. Warren restores through RPC rather than the
//! command line because a notification arrives while CRIU waits for the answer: at
//! `setup-namespaces` the restored sandbox's namespaces exist and no task of it runs yet, so
//! Warren builds its network there, in-process, instead of having CRIU replay it (see
//! `checkpoint::restore`).
//!
//! The messages mirror `images/rpc.proto` of CRIU 4 (proto2); only the fields Warren sets or
//! reads are declared, with CRIU's field numbers. One request and its replies are each one
//! `SOCK_SEQPACKET` datagram.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd};

use prost::Message;

/// `criu_req_type`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, prost::Enumeration)]
#[repr(i32)]
pub enum ReqType {
    Empty = 0,
    Dump = 1,
    Restore = 2,
    Check = 3,
    PreDump = 4,
    PageServer = 5,
    Notify = 6,
}

/// `criu_cg_mode`: how CRIU treats cgroups.
pub const CG_MODE_IGNORE: i32 = 0;
/// `criu_network_lock_method`: no lock of CRIU's own.
pub const NETWORK_LOCK_SKIP: i32 = 3;

#[derive(Clone, PartialEq, prost::Message)]
pub struct InheritFd {
    #[prost(string, required, tag = "1")]
    pub key: String,
    #[prost(int32, required, tag = "2")]
    pub fd: i32,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Opts {
    /// `-1`: the directory is named by `images_dir`.
    #[prost(int32, required, tag = "1")]
    pub images_dir_fd: i32,
    #[prost(bool, optional, tag = "5")]
    pub tcp_established: Option<bool>,
    #[prost(bool, optional, tag = "8")]
    pub file_locks: Option<bool>,
    #[prost(int32, optional, tag = "9")]
    pub log_level: Option<i32>,
    /// A name in the work directory.
    #[prost(string, optional, tag = "10")]
    pub log_file: Option<String>,
    #[prost(bool, optional, tag = "12")]
    pub notify_scripts: Option<bool>,
    #[prost(string, optional, tag = "13")]
    pub root: Option<String>,
    /// A descriptor of the client (CRIU opens it through `/proc/<client>/fd`).
    #[prost(int32, optional, tag = "17")]
    pub work_dir_fd: Option<i32>,
    #[prost(bool, optional, tag = "18")]
    pub link_remap: Option<bool>,
    /// Descriptors of the `criu swrk` process itself, by the key the image names them with.
    #[prost(message, repeated, tag = "27")]
    pub inherit_fd: Vec<InheritFd>,
    #[prost(int32, optional, tag = "34")]
    pub manage_cgroups_mode: Option<i32>,
    #[prost(string, repeated, tag = "37")]
    pub external: Vec<String>,
    /// Namespaces (clone flags) created empty instead of restored from the image.
    #[prost(uint32, optional, tag = "38")]
    pub empty_ns: Option<u32>,
    /// Private anonymous memory is left to a `criu lazy-pages` server (on the work directory's
    /// socket), which fills it in while the tasks run.
    #[prost(bool, optional, tag = "48")]
    pub lazy_pages: Option<bool>,
    #[prost(int32, optional, tag = "64")]
    pub network_lock: Option<i32>,
    #[prost(string, optional, tag = "68")]
    pub images_dir: Option<String>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Req {
    #[prost(enumeration = "ReqType", required, tag = "1")]
    pub r#type: i32,
    #[prost(message, optional, tag = "2")]
    pub opts: Option<Opts>,
    #[prost(bool, optional, tag = "3")]
    pub notify_success: Option<bool>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct RestoreResp {
    #[prost(int32, required, tag = "1")]
    pub pid: i32,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Notify {
    #[prost(string, optional, tag = "1")]
    pub script: Option<String>,
    #[prost(int32, optional, tag = "2")]
    pub pid: Option<i32>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Resp {
    #[prost(enumeration = "ReqType", required, tag = "1")]
    pub r#type: i32,
    #[prost(bool, required, tag = "2")]
    pub success: bool,
    #[prost(message, optional, tag = "4")]
    pub restore: Option<RestoreResp>,
    #[prost(message, optional, tag = "5")]
    pub notify: Option<Notify>,
    #[prost(int32, optional, tag = "7")]
    pub cr_errno: Option<i32>,
    #[prost(string, optional, tag = "9")]
    pub cr_errmsg: Option<String>,
}

/// A `SOCK_SEQPACKET` pair: Warren's end, and the end `criu swrk` is started with.
pub fn socket_pair() -> io::Result<(OwnedFd, OwnedFd)> {
    use nix::sys::socket::{socketpair, AddressFamily, SockFlag, SockType};
    socketpair(AddressFamily::Unix, SockType::SeqPacket, None, SockFlag::SOCK_CLOEXEC).map_err(io::Error::from)
}

pub fn send(sock: &OwnedFd, req: &Req) -> io::Result<()> {
    let buf = req.encode_to_vec();
    let n = nix::sys::socket::send(sock.as_raw_fd(), &buf, nix::sys::socket::MsgFlags::empty())?;
    if n != buf.len() {
        return Err(io::Error::other("a short write on CRIU's RPC socket"));
    }
    Ok(())
}

/// The next message from CRIU; `None` when it closed the socket (it exited).
pub fn recv(sock: &OwnedFd) -> io::Result<Option<Resp>> {
    let mut buf = vec![0u8; 64 * 1024];
    let n = nix::sys::socket::recv(sock.as_raw_fd(), &mut buf, nix::sys::socket::MsgFlags::empty())?;
    if n == 0 {
        return Ok(None);
    }
    Resp::decode(&buf[..n]).map(Some).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_restore_request_carries_criu_field_numbers() {
        let req = Req {
            r#type: ReqType::Restore as i32,
            opts: Some(Opts { images_dir_fd: -1, images_dir: Some("/i".into()), ..Default::default() }),
            notify_success: None,
        };
        let bytes = req.encode_to_vec();
        // type = 2 (field 1, varint), then opts (field 2, length-delimited) holding
        // images_dir_fd = -1 (field 1, ten-byte varint) and images_dir (field 68: key 0xa2 0x04).
        assert_eq!(&bytes[..3], &[0x08, 0x02, 0x12]);
        let opts = &bytes[4..];
        assert_eq!(opts[0], 0x08);
        assert_eq!(&opts[11..14], &[0xa2, 0x04, 0x02]);
        assert_eq!(&opts[14..], b"/i");
    }

    #[test]
    fn notifications_and_failures_decode() {
        let resp = Resp {
            r#type: ReqType::Notify as i32,
            success: true,
            notify: Some(Notify { script: Some("setup-namespaces".into()), pid: Some(42) }),
            ..Default::default()
        };
        let back = Resp::decode(&resp.encode_to_vec()[..]).unwrap();
        assert_eq!(back.notify.unwrap().pid, Some(42));
        // A response missing its fields reads as a failure, never as a success.
        let bare = Resp::decode(&[0x08, 0x02][..]).unwrap();
        assert!(!bare.success && bare.restore.is_none());
    }
}
