//! Sandbox networking: a server inside is reachable through Warren's proxy by Host name and by
//! header (HTTP and WebSocket), optionally behind the traffic token; sandboxes reach the outside
//! through the host with NAT but not each other, the host, or link-local addresses.
//!
//! Test traffic stays on this machine: "the outside" and the metadata address are a network
//! namespace this test creates (`198.18.x.2` and `169.254.169.254`), routed from the host.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::Duration;

use serde_json::json;
use warren_e2e::{shared, wait_for, Daemon, Sandbox};

fn daemon() -> &'static Daemon {
    shared("network")
}

/// Raw HTTP/1.1 through the daemon with the given Host; returns status and body.
fn via_host(d: &Daemon, host: &str, path: &str, extra: &str) -> (u16, String) {
    let mut s = TcpStream::connect(("127.0.0.1", d.port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(s, "GET {path} HTTP/1.1\r\nHost: {host}\r\n{extra}Connection: close\r\n\r\n").unwrap();
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf);
    let text = String::from_utf8_lossy(&buf).into_owned();
    let status = text.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default();
    (status, body)
}

fn address_of(sb: &Sandbox) -> String {
    let r = sb.sh("python3 -c 'import socket; print(socket.gethostbyname(socket.gethostname()))'");
    assert_eq!(r.exit_code, Some(0), "{r:?}");
    r.stdout.trim().to_owned()
}

/// Whether a TCP connection from inside the sandbox to `addr:port` succeeds within 2 s.
fn can_connect(sb: &Sandbox, addr: &str, port: u16) -> String {
    let py = format!(
        "import socket\ns=socket.socket()\ns.settimeout(2)\ntry:\n s.connect(('{addr}',{port}))\n print('connected')\nexcept Exception as e:\n print(type(e).__name__)"
    );
    sb.write_file("/tmp/probe.py", py.as_bytes());
    sb.sh("python3 /tmp/probe.py").stdout.trim().to_owned()
}

/// A server answering each POST with its body's length and byte sum (HTTP/1.1, kept alive).
const SUM_SERVER: &str = r#"
import http.server
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_POST(self):
        data = self.rfile.read(int(self.headers["Content-Length"]))
        out = f"{len(data)} {sum(data)}".encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)
    def log_message(self, *args):
        pass
http.server.ThreadingHTTPServer(("0.0.0.0", 8090), H).serve_forever()
"#;

const WS_ECHO: &str = r#"
import base64, hashlib, socket
srv = socket.socket(); srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind(("0.0.0.0", 8765)); srv.listen(4)
while True:
    c, _ = srv.accept()
    req = b""
    while b"\r\n\r\n" not in req:
        req += c.recv(4096)
    key = [l.split(b":", 1)[1].strip() for l in req.split(b"\r\n") if l.lower().startswith(b"sec-websocket-key")][0]
    acc = base64.b64encode(hashlib.sha1(key + b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11").digest())
    c.sendall(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: " + acc + b"\r\n\r\n")
    h = c.recv(2); n = h[1] & 127; mask = c.recv(4); data = bytearray(c.recv(n))
    for i in range(n): data[i] ^= mask[i % 4]
    c.sendall(bytes([0x81, n]) + bytes(data)); c.close()
"#;

#[test]
fn ports_inside_are_reached_by_host_name_and_header_over_http_and_websocket() {
    let d = daemon();
    let sb = d.create(json!({"templateID": "base"}));
    sb.sh("mkdir -p /tmp/www && echo served-from-inside > /tmp/www/hello.txt");
    sb.sh("cd /tmp/www && nohup python3 -m http.server 8080 >/dev/null 2>&1 &");
    let host = format!("8080-{}.localhost:{}", sb.id, d.port);
    let (_, body) = wait_for("the server inside to answer", Duration::from_secs(20), || {
        let r = via_host(d, &host, "/hello.txt", "");
        (r.0 == 200).then_some(r)
    });
    assert_eq!(body, "served-from-inside\n");
    // The same server by E2B's headers.
    let (status, body) = d.raw("GET", "/hello.txt", &[("E2b-Sandbox-Id", &sb.id), ("E2b-Sandbox-Port", "8080")], b"");
    assert_eq!((status, String::from_utf8_lossy(&body).into_owned()), (200, "served-from-inside\n".to_owned()));
    // A port nobody listens on: a clear 502.
    let (status, body) = via_host(d, &format!("9999-{}.localhost:{}", sb.id, d.port), "/", "");
    assert_eq!(status, 502, "{body}");
    assert!(body.contains("nothing answered on port 9999"), "{body}");

    // Request bodies stream through whole, and a kept-alive client connection carries request
    // after request to the same server inside.
    sb.write_file("/tmp/sum.py", SUM_SERVER.as_bytes());
    sb.sh("nohup python3 /tmp/sum.py >/dev/null 2>&1 &");
    let headers = [("E2b-Sandbox-Id", sb.id.as_str()), ("E2b-Sandbox-Port", "8090")];
    wait_for("the summing server inside", Duration::from_secs(20), || {
        (d.raw("POST", "/", &headers, b"x").0 == 200).then_some(())
    });
    let upload: Vec<u8> = (0..8u32 << 20).map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8).collect();
    let expected = format!("{} {}", upload.len(), upload.iter().map(|&b| u64::from(b)).sum::<u64>());
    for _ in 0..3 {
        let (status, answer) = d.raw("POST", "/sum", &headers, &upload);
        assert_eq!((status, String::from_utf8_lossy(&answer).into_owned()), (200, expected.clone()));
    }

    // WebSocket: the upgrade is spliced through to the server inside.
    sb.write_file("/tmp/ws.py", WS_ECHO.as_bytes());
    sb.sh("nohup python3 /tmp/ws.py >/dev/null 2>&1 &");
    let ws_host = format!("8765-{}.localhost:{}", sb.id, d.port);
    let echoed = wait_for("the WebSocket echo", Duration::from_secs(20), || {
        let mut s = TcpStream::connect(("127.0.0.1", d.port)).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        write!(
            s,
            "GET /echo HTTP/1.1\r\nHost: {ws_host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        )
        .ok()?;
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            s.read_exact(&mut byte).ok()?;
            head.push(byte[0]);
        }
        let head = String::from_utf8_lossy(&head).into_owned();
        if !head.starts_with("HTTP/1.1 101") {
            return None;
        }
        assert!(head.contains("s3pPLMBiTxaQ9kYGzzhZRbK+xOo="), "{head}");
        let mask = [1u8, 2, 3, 4];
        let payload: Vec<u8> = b"ping".iter().enumerate().map(|(i, b)| b ^ mask[i % 4]).collect();
        let mut frame = vec![0x81, 0x80 | 4];
        frame.extend_from_slice(&mask);
        frame.extend_from_slice(&payload);
        s.write_all(&frame).ok()?;
        let mut reply = [0u8; 6];
        s.read_exact(&mut reply).ok()?;
        Some(reply)
    });
    assert_eq!(&echoed, &[0x81, 4, b'p', b'i', b'n', b'g']);
    d.api("DELETE", &format!("/sandboxes/{}", sb.id), None);
}

#[test]
fn private_ports_need_the_traffic_token() {
    let d = daemon();
    let (sb, v) = d.try_create(json!({"templateID": "base", "network": {"allowPublicTraffic": false}})).unwrap();
    let token = v["trafficAccessToken"].as_str().expect("a traffic token").to_owned();
    sb.sh("cd /tmp && nohup python3 -m http.server 8080 >/dev/null 2>&1 &");
    let host = format!("8080-{}.localhost:{}", sb.id, d.port);
    let (status, body) = via_host(d, &host, "/", "");
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("e2b-traffic-access-token"), "{body}");
    wait_for("the server with the token", Duration::from_secs(20), || {
        (via_host(d, &host, "/", &format!("e2b-traffic-access-token: {token}\r\n")).0 == 200).then_some(())
    });
    // Settings this version does not implement are refused, not ignored.
    let (status, v) =
        d.api("POST", "/sandboxes", Some(json!({"templateID": "base", "network": {"dnsServers": ["1.1.1.1"]}})));
    assert_eq!(status, 400, "{v}");
    assert!(v["message"].as_str().unwrap().contains("network.dnsServers"), "{v}");
    d.api("DELETE", &format!("/sandboxes/{}", sb.id), None);
}

/// A namespace standing in for the outside world and the metadata service, on this machine.
struct FakeUpstream {
    ns: String,
    host_if: String,
    server: std::process::Child,
    upstream: String,
    host_ip: String,
    metadata: bool,
}

impl FakeUpstream {
    /// `metadata`: also answer for 169.254.169.254 (one test at a time may: it routes that address).
    fn new(tag: &str, third: u8, metadata: bool) -> FakeUpstream {
        let ns = format!("wup-{tag}");
        let host_if = format!("wuh-{tag}");
        let (host_ip, up_ip) = (format!("198.18.{third}.1"), format!("198.18.{third}.2"));
        let sh = |cmd: &str| {
            let ok = Command::new("sh").arg("-c").arg(cmd).status().unwrap().success();
            assert!(ok, "{cmd}");
        };
        let _ = Command::new("ip").args(["netns", "del", &ns]).status();
        let _ = Command::new("ip").args(["link", "del", &host_if]).status();
        sh(&format!("ip netns add {ns}"));
        sh(&format!("ip link add {host_if} type veth peer name eth0 netns {ns}"));
        sh(&format!("ip addr add {host_ip}/30 dev {host_if} && ip link set {host_if} up"));
        sh(&format!(
            "ip -n {ns} addr add {up_ip}/30 dev eth0 && \
             ip -n {ns} link set eth0 up && ip -n {ns} link set lo up && ip -n {ns} route add default via {host_ip}"
        ));
        if metadata {
            // The metadata address lives in the namespace too, so a broken rule would send
            // nothing off this machine.
            sh(&format!("ip -n {ns} addr add 169.254.169.254/32 dev eth0"));
            sh(&format!("ip route replace 169.254.169.254/32 via {up_ip} dev {host_if}"));
        }
        let server = Command::new("ip")
            .args(["netns", "exec", &ns, "python3", "-m", "http.server", "8000", "--bind", "0.0.0.0"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        // Ready once its server accepts connections (from the host, on this machine).
        let addr: std::net::SocketAddr = format!("{up_ip}:8000").parse().unwrap();
        wait_for("the fake upstream's server", Duration::from_secs(30), || {
            TcpStream::connect_timeout(&addr, Duration::from_millis(500)).ok().map(|_| ())
        });
        FakeUpstream { ns, host_if, server, upstream: up_ip, host_ip, metadata }
    }
}

impl Drop for FakeUpstream {
    fn drop(&mut self) {
        let _ = self.server.kill();
        let _ = self.server.wait();
        if self.metadata {
            let _ = Command::new("ip").args(["route", "del", "169.254.169.254/32"]).status();
        }
        let _ = Command::new("ip").args(["netns", "del", &self.ns]).status();
        let _ = Command::new("ip").args(["link", "del", &self.host_if]).status();
    }
}

#[test]
fn egress_is_open_but_not_to_neighbours_the_host_or_metadata() {
    let d = daemon();
    let up = FakeUpstream::new("net", 77, true);
    let a = d.create(json!({"templateID": "base"}));
    let b = d.create(json!({"templateID": "base"}));
    let resolv = a.sh("cat /etc/resolv.conf").stdout;
    assert!(resolv.contains("nameserver") || resolv.is_empty(), "{resolv}");
    assert!(a.sh("cat /etc/hosts").stdout.contains(&a.id));

    // Out through the host, with its address (NAT).
    let mut last = String::new();
    let reached = (0..200).any(|_| {
        last = can_connect(&a, &up.upstream, 8000);
        last == "connected" || {
            std::thread::sleep(Duration::from_millis(100));
            false
        }
    });
    assert!(reached, "the upstream through NAT: last attempt gave {last}");
    // Not the metadata address, even though it is routed to a namespace on this machine.
    let routes =
        String::from_utf8(Command::new("ip").args(["route", "get", "169.254.169.254"]).output().unwrap().stdout)
            .unwrap();
    assert!(routes.contains(&up.host_if), "the metadata address must stay on this machine: {routes}");
    assert_eq!(can_connect(&a, "169.254.169.254", 8000), "TimeoutError");
    // Not a neighbour: B's server is reachable from B itself only.
    b.sh("cd /tmp && nohup python3 -m http.server 8080 >/dev/null 2>&1 &");
    let b_addr = address_of(&b);
    wait_for("B's own server", Duration::from_secs(20), || {
        (can_connect(&b, &b_addr, 8080) == "connected").then_some(())
    });
    let from_a = can_connect(&a, &b_addr, 8080);
    assert!(from_a == "TimeoutError" || from_a == "ConnectionRefusedError", "A reached B: {from_a}");
    assert_ne!(from_a, "connected");
    // Not the host: a service listening on every host address, including the gateway's.
    let listener = std::net::TcpListener::bind("0.0.0.0:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let gateway = {
        let parts: Vec<&str> = b_addr.split('.').collect();
        format!("{}.{}.{}.1", parts[0], parts[1], parts[2])
    };
    assert_eq!(can_connect(&a, &gateway, port), "TimeoutError");
    assert_eq!(can_connect(&a, &up.host_ip, port), "TimeoutError");
    // Nor the daemon's API on the host's loopback: inside, 127.0.0.1 is the sandbox's own.
    assert_eq!(can_connect(&a, "127.0.0.1", d.port), "ConnectionRefusedError");
    for s in [&a, &b] {
        d.api("DELETE", &format!("/sandboxes/{}", s.id), None);
    }
}

#[test]
fn egress_policies_apply_at_create_and_change_live() {
    let d = daemon();
    let up = FakeUpstream::new("egr", 78, false);
    let target = up.upstream.clone();
    let sb = d.create(json!({"templateID": "base", "allow_internet_access": false}));
    // No internet: refused at once (a reject, not a silent drop).
    assert_eq!(can_connect(&sb, &target, 8000), "ConnectionRefusedError");
    // Its own server still answers through the proxy (replies are never filtered).
    sb.sh("cd /tmp && nohup python3 -m http.server 8080 >/dev/null 2>&1 &");
    let host = format!("8080-{}.localhost:{}", sb.id, d.port);
    wait_for("the server of a sandbox without internet", Duration::from_secs(20), || {
        (via_host(d, &host, "/", "").0 == 200).then_some(())
    });
    // Allow beats deny, live.
    let put = |body: serde_json::Value| d.api("PUT", &format!("/sandboxes/{}/network", sb.id), Some(body));
    let (status, v) = put(json!({"allowOut": [format!("{target}/32")], "allow_internet_access": false}));
    assert_eq!(status, 204, "{v}");
    assert_eq!(can_connect(&sb, &target, 8000), "connected");
    // An empty update clears the policy.
    assert_eq!(put(json!({})).0, 204);
    assert_eq!(can_connect(&sb, &target, 8000), "connected");
    assert_eq!(put(json!({"denyOut": [target.clone()]})).0, 204);
    assert_eq!(can_connect(&sb, &target, 8000), "ConnectionRefusedError");
    // Domains cannot be enforced here: a clear 400, and the policy in force stays.
    let (status, v) = put(json!({"allowOut": ["example.com"]}));
    assert_eq!(status, 400, "{v}");
    assert!(v["message"].as_str().unwrap().contains("domain names are not supported"), "{v}");
    assert_eq!(can_connect(&sb, &target, 8000), "ConnectionRefusedError");
    assert_eq!(put(json!({"denyOut": ["10.0.0.0/33"]})).0, 400);
    assert_eq!(d.api("PUT", "/sandboxes/inope/network", Some(json!({}))).0, 404);
    let logged = d.api("GET", &format!("/v2/sandboxes/{}/logs", sb.id), None).1;
    assert!(logged.to_string().contains("network policy updated"));
    d.api("DELETE", &format!("/sandboxes/{}", sb.id), None);
}
