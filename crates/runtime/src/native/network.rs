//! Sandbox networking on the native runtime: one bridge with the gateway address, one veth pair per
//! sandbox (the host end a bridge port marked `isolated`, so sandboxes cannot reach each other, the
//! other end `eth0` in the sandbox's network namespace), masquerading out, and one nftables table
//! owned by this daemon that keeps sandboxes away from the host itself and from link-local and
//! metadata addresses. Sandboxes have no `CAP_NET_ADMIN`, so they cannot change their addresses,
//! routes or rules.

use std::io::Write;
use std::net::Ipv4Addr;
use std::path::Path;
use std::process::{Command, Stdio};

use serde_json::json;

use crate::RuntimeError;

/// Where sandboxes live on the network.
#[derive(Debug, Clone)]
pub struct NetworkSettings {
    /// Bridge name (≤ 15 bytes); the nftables table is named after it.
    pub bridge: String,
    /// The sandboxes' subnet; its first address is the gateway on the bridge.
    pub subnet: Ipv4Addr,
    pub prefix: u8,
    /// Name servers written to each sandbox's `/etc/resolv.conf`.
    pub dns: Vec<String>,
}

impl NetworkSettings {
    pub fn gateway(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.subnet) + 1)
    }

    fn table(&self) -> String {
        format!("warren_{}", self.bridge.replace('-', "_"))
    }
}

fn net_err(what: &'static str) -> impl FnOnce(std::io::Error) -> RuntimeError {
    move |source| RuntimeError::Prepare { what, path: "/sys/class/net".into(), source }
}

/// Runs `ip -batch -` with `lines` (host set-up, once per start).
fn ip_batch(lines: &str) -> Result<(), RuntimeError> {
    let mut child = Command::new("ip")
        .args(["-batch", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(net_err("running ip (iproute2)"))?;
    child.stdin.take().expect("piped").write_all(lines.as_bytes()).map_err(net_err("writing to ip"))?;
    let out = child.wait_with_output().map_err(net_err("running ip (iproute2)"))?;
    if !out.status.success() {
        return Err(RuntimeError::Network {
            detail: format!("ip {}: {}", lines.trim().replace('\n', "; "), String::from_utf8_lossy(&out.stderr).trim()),
        });
    }
    Ok(())
}

/// Name servers the host itself uses, when sandboxes can reach them (not loopback ones).
pub fn host_nameservers() -> Vec<String> {
    std::fs::read_to_string("/etc/resolv.conf")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.trim().strip_prefix("nameserver"))
        .map(|s| s.trim().to_owned())
        .filter(|s| s.parse::<std::net::IpAddr>().is_ok_and(|a| !a.is_loopback()))
        .collect()
}

/// The host end's name: `w` + the last 14 characters of the sandbox id (interface names have 15).
pub fn host_veth(id: &str) -> String {
    format!("w{}", &id[id.len().saturating_sub(14)..])
}

/// The bridge, forwarding and the nftables table, set up (again) at every start.
pub fn setup_host(s: &NetworkSettings) -> Result<(), RuntimeError> {
    let gw = s.gateway();
    let bridge_exists = Path::new("/sys/class/net").join(&s.bridge).exists();
    let mut lines = String::new();
    if !bridge_exists {
        lines.push_str(&format!("link add name {} type bridge\n", s.bridge));
    }
    lines.push_str(&format!("addr replace {gw}/{} dev {}\nlink set {} up\n", s.prefix, s.bridge, s.bridge));
    ip_batch(&lines)?;
    std::fs::write("/proc/sys/net/ipv4/ip_forward", "1").map_err(net_err("enabling IPv4 forwarding"))?;
    apply_rules(s)
}

fn apply_rules(s: &NetworkSettings) -> Result<(), RuntimeError> {
    let nft = ruleset(s)?;
    nftables::helper::apply_ruleset(&nft).map_err(|e| RuntimeError::Network {
        detail: format!("applying the nftables table {}: {e} (is nftables installed?)", s.table()),
    })
}

/// The daemon's whole table, replaced atomically.
fn ruleset(s: &NetworkSettings) -> Result<nftables::schema::Nftables<'static>, RuntimeError> {
    let table = s.table();
    let br = s.bridge.as_str();
    let subnet = json!({"prefix": {"addr": s.subnet.to_string(), "len": s.prefix}});
    let iif = json!({"match": {"op": "==", "left": {"meta": {"key": "iifname"}}, "right": br}});
    let daddr = |net: serde_json::Value| json!({"match": {"op": "==", "left": {"payload": {"protocol": "ip", "field": "daddr"}}, "right": net}});
    let rule = |chain: &str, expr: serde_json::Value| json!({"add": {"rule": {"family": "inet", "table": table, "chain": chain, "expr": expr}}});
    let chain = |name: &str, kind: &str, hook: &str, prio: i32| json!({"add": {"chain": {"family": "inet", "table": table, "name": name, "type": kind, "hook": hook, "prio": prio, "policy": "accept"}}});
    let payload = json!({"nftables": [
        // Add-then-delete makes the delete succeed whether or not the table existed: one atomic
        // batch replaces the whole table.
        {"add": {"table": {"family": "inet", "name": table}}},
        {"delete": {"table": {"family": "inet", "name": table}}},
        {"add": {"table": {"family": "inet", "name": table}}},
        chain("input", "filter", "input", 0),
        chain("forward", "filter", "forward", 0),
        chain("postrouting", "nat", "postrouting", 100),
        // Sandboxes reach no service of the host (replies to the daemon's own connections pass).
        rule("input", json!([iif, {"match": {"op": "in", "left": {"ct": {"key": "state"}}, "right": ["established", "related"]}}, {"accept": null}])),
        rule("input", json!([iif, {"drop": null}])),
        // Nor link-local/metadata addresses, nor other sandboxes by routing.
        rule("forward", json!([iif, daddr(json!({"prefix": {"addr": "169.254.0.0", "len": 16}})), {"drop": null}])),
        rule("forward", json!([iif, daddr(subnet.clone()), {"drop": null}])),
        rule("forward", json!([iif, {"match": {"op": "==", "left": {"meta": {"key": "oifname"}}, "right": br}}, {"drop": null}])),
        // Out to the world with the host's address.
        rule("postrouting", json!([
            {"match": {"op": "==", "left": {"payload": {"protocol": "ip", "field": "saddr"}}, "right": subnet}},
            {"match": {"op": "!=", "left": {"meta": {"key": "oifname"}}, "right": br}},
            {"masquerade": null}
        ])),
    ]});
    serde_json::from_value(payload).map_err(|e| RuntimeError::Network { detail: format!("nftables ruleset: {e}") })
}

/// Removes the table (the bridge stays: other things may use it; it is harmless when unused).
pub fn teardown_host(s: &NetworkSettings) {
    let table = s.table();
    let payload = json!({"nftables": [
        {"add": {"table": {"family": "inet", "name": table}}},
        {"delete": {"table": {"family": "inet", "name": table}}},
    ]});
    if let Ok(nft) = serde_json::from_value::<nftables::schema::Nftables>(payload) {
        let _ = nftables::helper::apply_ruleset(&nft);
    }
}

/// The egress table inside a sandbox's own network namespace: small and local to it (no host
/// rule grows with the number of sandboxes), and out of the sandbox's reach (it has no
/// `CAP_NET_ADMIN`). Allow beats deny; replies and loopback always pass.
fn egress_ruleset(allow: &[(Ipv4Addr, u8)], deny: &[(Ipv4Addr, u8)]) -> serde_json::Value {
    const T: &str = "warren_egress";
    let mut cmds = vec![
        json!({"add": {"table": {"family": "inet", "name": T}}}),
        json!({"delete": {"table": {"family": "inet", "name": T}}}),
    ];
    if allow.is_empty() && deny.is_empty() {
        return json!({ "nftables": cmds });
    }
    let elems = |v: &[(Ipv4Addr, u8)]| -> Vec<serde_json::Value> {
        v.iter().map(|(a, l)| json!({"prefix": {"addr": a.to_string(), "len": l}})).collect()
    };
    let daddr_in = |set: &str| json!({"match": {"op": "==", "left": {"payload": {"protocol": "ip", "field": "daddr"}}, "right": format!("@{set}")}});
    let rule = |expr: serde_json::Value| json!({"add": {"rule": {"family": "inet", "table": T, "chain": "output", "expr": expr}}});
    cmds.extend([
        json!({"add": {"table": {"family": "inet", "name": T}}}),
        json!({"add": {"chain": {"family": "inet", "table": T, "name": "output", "type": "filter", "hook": "output", "prio": 0, "policy": "accept"}}}),
    ]);
    for (name, list) in [("allow", allow), ("deny", deny)] {
        cmds.push(json!({"add": {"set": {"family": "inet", "table": T, "name": name, "type": "ipv4_addr", "flags": ["interval"], "auto-merge": true}}}));
        if !list.is_empty() {
            cmds.push(json!({"add": {"element": {"family": "inet", "table": T, "name": name, "elem": elems(list)}}}));
        }
    }
    cmds.extend([
        rule(json!([{"match": {"op": "==", "left": {"meta": {"key": "oifname"}}, "right": "lo"}}, {"accept": null}])),
        rule(json!([{"match": {"op": "in", "left": {"ct": {"key": "state"}}, "right": ["established", "related"]}}, {"accept": null}])),
        rule(json!([daddr_in("allow"), {"accept": null}])),
        rule(json!([daddr_in("deny"), {"reject": null}])),
    ]);
    json!({ "nftables": cmds })
}

/// Applies (or with both lists empty, removes) the egress table in the network namespace of `pid`.
pub fn set_egress(pid: i32, allow: &[(Ipv4Addr, u8)], deny: &[(Ipv4Addr, u8)]) -> Result<(), RuntimeError> {
    in_namespaces_of(pid, &["net"], || apply_egress_here(allow, deny))
        .map_err(|detail| RuntimeError::Network { detail })
}

/// The bridge's interface index (the spawner attaches veths to it by index).
pub fn bridge_index(s: &NetworkSettings) -> Result<u32, RuntimeError> {
    let p = Path::new("/sys/class/net").join(&s.bridge).join("ifindex");
    std::fs::read_to_string(&p)
        .ok()
        .and_then(|t| t.trim().parse().ok())
        .ok_or_else(|| RuntimeError::Network { detail: format!("bridge {} has no interface index", s.bridge) })
}

/// What the spawner needs to wire one sandbox (part of its spawn request).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SandboxLink {
    pub host_veth: String,
    pub bridge_index: u32,
    pub address: Ipv4Addr,
    pub prefix: u8,
    pub gateway: Ipv4Addr,
}

/// Sends one netlink route request and waits for its acknowledgement.
fn netlink_request(payload: netlink_packet_route::RouteNetlinkMessage, flags: u16) -> std::io::Result<()> {
    use netlink_packet_core::{NetlinkHeader, NetlinkMessage, NetlinkPayload, NLM_F_ACK, NLM_F_REQUEST};
    use netlink_packet_route::RouteNetlinkMessage;
    let mut header = NetlinkHeader::default();
    header.flags = NLM_F_REQUEST | NLM_F_ACK | flags;
    let mut msg = NetlinkMessage::new(header, NetlinkPayload::from(payload));
    msg.finalize();
    let mut buf = vec![0u8; msg.buffer_len()];
    msg.serialize(&mut buf);
    let mut sock = netlink_sys::Socket::new(netlink_sys::protocols::NETLINK_ROUTE)?;
    sock.bind_auto()?;
    sock.connect(&netlink_sys::SocketAddr::new(0, 0))?;
    sock.send(&buf, 0)?;
    let mut reply = vec![0u8; 8192];
    let n = sock.recv(&mut &mut reply[..], 0)?;
    let answer = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&reply[..n])
        .map_err(|e| std::io::Error::other(format!("decoding the netlink answer: {e}")))?;
    if let NetlinkPayload::Error(e) = answer.payload {
        if let Some(code) = e.code {
            return Err(std::io::Error::from_raw_os_error(-code.get()));
        }
    }
    Ok(())
}

/// Deletes a sandbox's host-side veth (and with it its peer) now, instead of when the kernel gets
/// round to cleaning up the dead network namespace: a sandbox woken right after a pause to disk
/// needs the name again. Absent already is fine.
pub fn delete_veth(id: &str) -> std::io::Result<()> {
    use netlink_packet_route::link::{LinkAttribute, LinkMessage};
    let mut msg = LinkMessage::default();
    msg.attributes.push(LinkAttribute::IfName(host_veth(id)));
    match netlink_request(netlink_packet_route::RouteNetlinkMessage::DelLink(msg), 0) {
        Err(e) if e.raw_os_error() == Some(libc::ENODEV) => Ok(()),
        r => r,
    }
}

/// Creates the veth pair from the host side (the spawner, as root in the host's network
/// namespace): `host_veth` up and enslaved to the bridge, its peer `eth0` in the network namespace
/// of `pid`; then marks the bridge port isolated. One netlink request and one sysfs write, no
/// helper processes.
pub fn create_veth(link: &SandboxLink, pid: i32) -> std::io::Result<()> {
    create_veth_pair(&link.host_veth, link.bridge_index, "eth0", Some(pid))
}

/// The veth pair of a sandbox being restored: `eth0` made right in the network namespace of `pid`
/// (the restored init's, still empty), and the host end down and off the bridge until
/// [`attach_veth`], so that nothing reaches the sandbox before all of it is back. Creating the
/// device where it belongs matters: moving one between namespaces waits for an RCU barrier
/// (20–40 ms here).
pub fn create_detached_veth(id: &str, pid: i32) -> std::io::Result<()> {
    use netlink_packet_core::{NLM_F_CREATE, NLM_F_EXCL};
    use netlink_packet_route::link::{InfoData, InfoKind, InfoVeth, LinkAttribute, LinkInfo, LinkMessage};
    use netlink_packet_route::RouteNetlinkMessage;
    let mut peer = LinkMessage::default();
    peer.attributes.push(LinkAttribute::IfName("eth0".into()));
    peer.attributes.push(LinkAttribute::NetNsPid(pid as u32));
    let mut host_msg = LinkMessage::default();
    host_msg.attributes.push(LinkAttribute::IfName(host_veth(id)));
    host_msg.attributes.push(LinkAttribute::LinkInfo(vec![
        LinkInfo::Kind(InfoKind::Veth),
        LinkInfo::Data(InfoData::Veth(InfoVeth::Peer(peer))),
    ]));
    netlink_request(RouteNetlinkMessage::NewLink(host_msg), NLM_F_CREATE | NLM_F_EXCL)
}

/// Runs `f` on a thread of its own that joined the namespaces `kinds` (`"net"`, `"uts"`) of `pid`:
/// what it configures lands there, and a process it starts is born there. The caller's threads
/// stay where they are.
pub fn in_namespaces_of<T: Send>(
    pid: i32,
    kinds: &[&str],
    f: impl FnOnce() -> Result<T, String> + Send,
) -> Result<T, String> {
    use nix::sched::CloneFlags;
    let mut joins = Vec::new();
    for kind in kinds {
        let flag = match *kind {
            "net" => CloneFlags::CLONE_NEWNET,
            "uts" => CloneFlags::CLONE_NEWUTS,
            other => return Err(format!("joining a {other} namespace is not supported")),
        };
        let path = format!("/proc/{pid}/ns/{kind}");
        let fd = std::fs::File::open(&path).map_err(|e| format!("opening {path}: {e}"))?;
        joins.push((fd, flag, path));
    }
    std::thread::scope(|s| {
        s.spawn(move || {
            for (fd, flag, path) in &joins {
                nix::sched::setns(fd, *flag).map_err(|e| format!("joining {path}: {e}"))?;
            }
            f()
        })
        .join()
        .unwrap_or_else(|_| Err("the namespace worker panicked".into()))
    })
}

/// A datagram socket for interface ioctls, and an `ifreq` naming `name`.
fn if_request(name: &str) -> Result<(std::os::fd::OwnedFd, libc::ifreq), String> {
    use std::os::fd::FromRawFd;
    // SAFETY: a plain datagram socket, used only for interface ioctls.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(format!("socket for {name}: {}", std::io::Error::last_os_error()));
    }
    // SAFETY: fd was just returned by socket().
    let sock = unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) };
    // SAFETY: ifreq is plain old data; zeroed is a valid value.
    let mut ifr: libc::ifreq = unsafe { std::mem::zeroed() };
    for (i, b) in name.bytes().take(libc::IFNAMSIZ - 1).enumerate() {
        ifr.ifr_name[i] = b as libc::c_char;
    }
    Ok((sock, ifr))
}

/// The label of the second address a clone's `eth0` carries while it is restored.
const SOURCE_ALIAS: &str = "eth0:0";

/// `eth0`'s IPv4 address in the calling thread's network namespace, if it has one.
pub fn eth0_address() -> Option<Ipv4Addr> {
    use std::os::fd::AsRawFd;
    let (sock, mut ifr) = if_request("eth0").ok()?;
    // SAFETY: SIOCGIFADDR writes one sockaddr into the ifreq passed.
    if unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFADDR, &mut ifr) } < 0 {
        return None;
    }
    // SAFETY: the kernel filled ifru_addr with an AF_INET address.
    let sin: libc::sockaddr_in = unsafe { std::mem::transmute(ifr.ifr_ifru.ifru_addr) };
    Some(Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr)))
}

/// Gives `eth0` a second address, `addr` (a clone's source's, which sockets in the image are bound
/// to), until [`remove_source_alias`].
pub fn add_source_alias(addr: Ipv4Addr, prefix: u8) -> Result<(), String> {
    use std::os::fd::AsRawFd;
    let (sock, mut ifr) = if_request(SOURCE_ALIAS)?;
    let mask = Ipv4Addr::from(u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0));
    let fail = |what: &str| format!("{what} of {SOURCE_ALIAS}: {}", std::io::Error::last_os_error());
    // SAFETY: each ioctl reads or writes the one ifreq passed to it.
    unsafe {
        ifr.ifr_ifru.ifru_addr = super::spawn::sockaddr_in(addr);
        if libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFADDR, &ifr) < 0 {
            return Err(fail("setting the address"));
        }
        ifr.ifr_ifru.ifru_netmask = super::spawn::sockaddr_in(mask);
        if libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFNETMASK, &ifr) < 0 {
            return Err(fail("setting the netmask"));
        }
    }
    Ok(())
}

/// Drops the address [`add_source_alias`] gave (taking an alias down deletes its address).
pub fn remove_source_alias() -> Result<(), String> {
    use std::os::fd::AsRawFd;
    let (sock, mut ifr) = if_request(SOURCE_ALIAS)?;
    // SAFETY: SIOCGIFFLAGS/SIOCSIFFLAGS read and write one ifreq.
    unsafe {
        if libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS, &mut ifr) < 0 {
            return Err(format!("reading {SOURCE_ALIAS}: {}", std::io::Error::last_os_error()));
        }
        ifr.ifr_ifru.ifru_flags &= !(libc::IFF_UP as libc::c_short);
        if libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS, &ifr) < 0 {
            return Err(format!("removing {SOURCE_ALIAS}: {}", std::io::Error::last_os_error()));
        }
    }
    Ok(())
}

/// Applies the egress table in the calling thread's network namespace (`nft` is started from it).
pub fn apply_egress_here(allow: &[(Ipv4Addr, u8)], deny: &[(Ipv4Addr, u8)]) -> Result<(), String> {
    let nft: nftables::schema::Nftables =
        serde_json::from_value(egress_ruleset(allow, deny)).map_err(|e| format!("egress ruleset: {e}"))?;
    nftables::helper::apply_ruleset(&nft).map_err(|e| format!("applying the egress rules: {e}"))
}

/// Puts a detached host-side veth on the bridge: enslaved while down, marked isolated, then up,
/// so no frame passes before the port is isolated.
pub fn attach_veth(id: &str, bridge_index: u32) -> std::io::Result<()> {
    use netlink_packet_route::link::{LinkAttribute, LinkFlags, LinkMessage};
    use netlink_packet_route::RouteNetlinkMessage;
    let host = host_veth(id);
    let set = |up: bool, controller: Option<u32>| {
        let mut msg = LinkMessage::default();
        msg.header.flags = if up { LinkFlags::Up } else { LinkFlags::empty() };
        msg.header.change_mask = LinkFlags::Up;
        msg.attributes.push(LinkAttribute::IfName(host.clone()));
        if let Some(c) = controller {
            msg.attributes.push(LinkAttribute::Controller(c));
        }
        netlink_request(RouteNetlinkMessage::SetLink(msg), 0)
    };
    set(false, Some(bridge_index))?;
    std::fs::write(format!("/sys/class/net/{host}/brport/isolated"), "1")?;
    set(true, None)
}

/// `host` up on the bridge, its peer `peer` in the namespace of `peer_pid` (the host's when
/// `None`), then the bridge port marked isolated.
fn create_veth_pair(host: &str, bridge_index: u32, peer_name: &str, peer_pid: Option<i32>) -> std::io::Result<()> {
    use netlink_packet_core::{NLM_F_CREATE, NLM_F_EXCL};
    use netlink_packet_route::link::{InfoData, InfoKind, InfoVeth, LinkAttribute, LinkFlags, LinkInfo, LinkMessage};
    use netlink_packet_route::RouteNetlinkMessage;

    let mut peer = LinkMessage::default();
    peer.attributes.push(LinkAttribute::IfName(peer_name.into()));
    if let Some(pid) = peer_pid {
        peer.attributes.push(LinkAttribute::NetNsPid(pid as u32));
    }
    let mut host_msg = LinkMessage::default();
    host_msg.header.flags = LinkFlags::Up;
    host_msg.header.change_mask = LinkFlags::Up;
    host_msg.attributes.push(LinkAttribute::IfName(host.to_owned()));
    host_msg.attributes.push(LinkAttribute::Controller(bridge_index));
    host_msg.attributes.push(LinkAttribute::LinkInfo(vec![
        LinkInfo::Kind(InfoKind::Veth),
        LinkInfo::Data(InfoData::Veth(InfoVeth::Peer(peer))),
    ]));
    netlink_request(RouteNetlinkMessage::NewLink(host_msg), NLM_F_CREATE | NLM_F_EXCL)?;
    std::fs::write(format!("/sys/class/net/{host}/brport/isolated"), "1")
}

/// `/etc/resolv.conf` and `/etc/hosts` for a sandbox, written into its writable layer before boot
/// (owned by the sandbox's root).
pub fn write_etc(s: &NetworkSettings, upper: &Path, hostname: &str, addr: Ipv4Addr, owner: u32) -> std::io::Result<()> {
    let etc = upper.join("etc");
    std::fs::create_dir_all(&etc)?;
    std::os::unix::fs::chown(&etc, Some(owner), Some(owner))?;
    let mut resolv = String::new();
    for ns in &s.dns {
        resolv.push_str(&format!("nameserver {ns}\n"));
    }
    let hosts = format!("127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n{addr}\t{hostname}\n");
    for (name, text) in [("resolv.conf", resolv), ("hosts", hosts)] {
        let p = etc.join(name);
        std::fs::write(&p, text)?;
        std::os::unix::fs::chown(&p, Some(owner), Some(owner))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_fit_and_the_ruleset_parses() {
        assert_eq!(host_veth("i0123456789abcdefghij"), "w6789abcdefghij");
        assert!(host_veth("i0123456789abcdefghij").len() <= 15);
        let s =
            NetworkSettings { bridge: "warren0".into(), subnet: Ipv4Addr::new(10, 88, 0, 0), prefix: 16, dns: vec![] };
        assert_eq!(s.gateway(), Ipv4Addr::new(10, 88, 0, 1));
        assert_eq!(s.table(), "warren_warren0");
        let nft = ruleset(&s).unwrap();
        assert!(nft.objects.len() > 8);
        let any = (Ipv4Addr::UNSPECIFIED, 0);
        for (allow, deny) in [(vec![], vec![]), (vec![(Ipv4Addr::new(10, 0, 0, 0), 8)], vec![any])] {
            let v = egress_ruleset(&allow, &deny);
            serde_json::from_value::<nftables::schema::Nftables>(v).expect("a valid egress ruleset");
        }
    }
}
