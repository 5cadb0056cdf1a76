//! Running a command in a sandbox through the sandbox protocol, streaming its output live.

use std::io::Write;

use anyhow::{anyhow, Result};
use base64::Engine;
use http::Method;
use http_body_util::{BodyExt, Full};
use warren_protocol::connect::{self, Code, EndStream, FLAG_END_STREAM};
use warren_protocol::process::{DataEvent, EventResponse, ProcessConfig, ProcessEvent, StartRequest};

use crate::client::Client;

pub struct ExecOptions {
    pub argv: Vec<String>,
    pub user: Option<String>,
    pub cwd: Option<String>,
    pub env: Vec<(String, String)>,
}

/// Runs `argv` and returns its exit code (127 when the command does not exist, as a shell would).
pub async fn exec(client: &Client, sandbox: &str, opts: ExecOptions) -> Result<i32> {
    let (cmd, args) = opts.argv.split_first().ok_or_else(|| anyhow!("no command given"))?;
    let start = StartRequest {
        process: Some(ProcessConfig {
            cmd: cmd.clone(),
            args: args.to_vec(),
            envs: opts.env.into_iter().collect(),
            cwd: opts.cwd,
        }),
        pty: None,
        tag: None,
        stdin: Some(false),
    };
    let mut req = client
        .sandbox_request(sandbox, Method::POST, "/process.Process/Start")
        .header(http::header::CONTENT_TYPE, "application/connect+json")
        .header("connect-protocol-version", "1");
    if let Some(u) = &opts.user {
        let cred = base64::engine::general_purpose::STANDARD.encode(format!("{u}:"));
        req = req.header(http::header::AUTHORIZATION, format!("Basic {cred}"));
    }
    let body = connect::json_envelope(&start);
    let resp = crate::client::success(client.send(req.body(Full::new(body))?).await?).await?;
    let mut body = resp.into_body();
    let mut dec = connect::Decoder::default();
    let mut exit = None;
    let stdout = std::io::stdout();
    let stderr = std::io::stderr();
    while let Some(frame) = body.frame().await {
        let Ok(data) = frame?.into_data() else { continue };
        dec.push(&data);
        while let Some(f) = dec.next_frame().map_err(|e| anyhow!("{e}"))? {
            if f.flags & FLAG_END_STREAM != 0 {
                let end: EndStream = serde_json::from_slice(&f.payload).unwrap_or_default();
                if let Some(e) = end.error {
                    if e.code == Code::NotFound && exit.is_none() {
                        eprintln!("warren: {}", e.message);
                        return Ok(127);
                    }
                    return Err(anyhow!("{}", e.message));
                }
                continue;
            }
            let ev: EventResponse = serde_json::from_slice(&f.payload)?;
            match ev.event {
                ProcessEvent::Data(DataEvent::Stdout(b)) | ProcessEvent::Data(DataEvent::Pty(b)) => {
                    let mut o = stdout.lock();
                    o.write_all(&b)?;
                    o.flush()?;
                }
                ProcessEvent::Data(DataEvent::Stderr(b)) => {
                    let mut e = stderr.lock();
                    e.write_all(&b)?;
                    e.flush()?;
                }
                ProcessEvent::End(end) => {
                    exit = Some(if end.exited { end.exit_code } else { 128 + signal_number(&end.status) });
                }
                ProcessEvent::Start(_) | ProcessEvent::Keepalive(_) => {}
            }
        }
    }
    exit.ok_or_else(|| anyhow!("the sandbox closed the stream before the process ended"))
}

fn signal_number(status: &str) -> i32 {
    match status {
        s if s.contains("killed") => 9,
        s if s.contains("terminated") => 15,
        s if s.contains("interrupt") => 2,
        _ => 1,
    }
}
