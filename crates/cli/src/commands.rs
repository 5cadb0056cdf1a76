//! The client verbs: each one is a few calls to the daemon's HTTP API plus human or JSON output.

use std::io::{Read, Write};

use anyhow::{anyhow, Context, Result};
use bytes::Bytes;
use http::Method;
use http_body_util::{BodyExt, Full};
use serde_json::json;
use warren_types::api::{ApiKeyInfo, BuildProgress, Sandbox, SandboxDetail, TemplateInfo};
use warren_types::pool::PoolInfo;

use crate::client::Client;
use crate::exec::{exec, ExecOptions};
use crate::{FilesCmd, KeyCmd, PoolCmd, PoolSizeArgs, RunArgs, SandboxCmd, ShapeArgs, TemplateCmd};

pub struct Output {
    pub json: bool,
}

impl Output {
    pub fn print<T: serde::Serialize>(&self, v: &T, human: impl FnOnce()) {
        if self.json {
            println!("{}", serde_json::to_string_pretty(v).expect("serializes"));
        } else {
            human();
        }
    }
}

pub fn table(headers: &[&str], rows: Vec<Vec<String>>) {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for r in &rows {
        for (i, c) in r.iter().enumerate() {
            widths[i] = widths[i].max(c.len());
        }
    }
    let line = |cells: Vec<String>| {
        let s: Vec<String> = cells.iter().enumerate().map(|(i, c)| format!("{c:<w$}", w = widths[i])).collect();
        println!("{}", s.join("  ").trim_end());
    };
    line(headers.iter().map(|s| s.to_string()).collect());
    for r in rows {
        line(r);
    }
}

fn create_body(shape: &ShapeArgs, metadata: &[(String, String)]) -> serde_json::Value {
    json!({
        "templateID": shape.template,
        "timeout": shape.timeout,
        "cpuCount": shape.cpu,
        "memoryMB": shape.memory,
        "diskSizeMB": shape.disk,
        "runtime": shape.runtime,
        "envVars": shape.env.iter().cloned().collect::<std::collections::BTreeMap<_, _>>(),
        "metadata": metadata.iter().cloned().collect::<std::collections::BTreeMap<_, _>>(),
    })
}

pub async fn run(client: &Client, _out: &Output, args: RunArgs) -> Result<i32> {
    let sb: Sandbox = client.json(Method::POST, "/sandboxes", Some(create_body(&args.shape, &[]))).await?;
    let result =
        exec(client, &sb.sandbox_id, ExecOptions { argv: args.command, user: args.user, cwd: args.cwd, env: vec![] })
            .await;
    // Kill even when the command failed; report the kill error only if the command itself worked.
    let killed = client.call(Method::DELETE, &format!("/sandboxes/{}", sb.sandbox_id), None).await;
    let code = result?;
    killed.with_context(|| format!("killing sandbox {}", sb.sandbox_id))?;
    Ok(code)
}

pub async fn sandbox(client: &Client, out: &Output, cmd: SandboxCmd) -> Result<i32> {
    match cmd {
        SandboxCmd::Create { shape, metadata } => {
            let sb: Sandbox = client.json(Method::POST, "/sandboxes", Some(create_body(&shape, &metadata))).await?;
            out.print(&sb, || println!("{}", sb.sandbox_id));
        }
        SandboxCmd::List => {
            let list: Vec<SandboxDetail> = client.json(Method::GET, "/sandboxes", None).await?;
            out.print(&list, || {
                table(
                    &["ID", "TEMPLATE", "STATE", "CPU", "MEMORY", "DISK", "STARTED", "ENDS"],
                    list.iter()
                        .map(|s| {
                            vec![
                                s.sandbox_id.clone(),
                                s.template_id.clone(),
                                format!("{:?}", s.warren_state).to_lowercase(),
                                s.cpu_count.to_string(),
                                format!("{} MiB", s.memory_mb),
                                format!("{} MiB", s.disk_size_mb),
                                s.started_at.clone(),
                                s.end_at.clone(),
                            ]
                        })
                        .collect(),
                )
            });
        }
        SandboxCmd::Info { id } => {
            let s: SandboxDetail = client.json(Method::GET, &format!("/sandboxes/{id}"), None).await?;
            out.print(&s, || {
                println!("id:        {}", s.sandbox_id);
                println!("template:  {}", s.template_id);
                println!("state:     {}", format!("{:?}", s.warren_state).to_lowercase());
                println!("cpu:       {}", s.cpu_count);
                println!("memory:    {} MiB", s.memory_mb);
                println!("disk:      {} MiB", s.disk_size_mb);
                println!("started:   {}", s.started_at);
                println!("ends:      {}", s.end_at);
                for (k, v) in &s.metadata {
                    println!("metadata:  {k}={v}");
                }
            });
        }
        SandboxCmd::Kill { ids } => {
            let mut failed = 0;
            for id in &ids {
                match client.call(Method::DELETE, &format!("/sandboxes/{id}"), None).await {
                    Ok(_) => {
                        if !out.json {
                            println!("killed {id}");
                        }
                    }
                    Err(e) => {
                        eprintln!("warren: {id}: {e:#}");
                        failed += 1;
                    }
                }
            }
            if out.json {
                println!("{}", json!({"killed": ids.len() - failed, "failed": failed}));
            }
            return Ok(if failed > 0 { 1 } else { 0 });
        }
        SandboxCmd::Timeout { id, seconds } => {
            client.call(Method::POST, &format!("/sandboxes/{id}/timeout"), Some(json!({"timeout": seconds}))).await?;
            out.print(&json!({"sandboxID": id, "timeout": seconds}), || println!("{id} now ends in {seconds} s"));
        }
        SandboxCmd::Pause { id, memory, files_only } => {
            let body = match (memory, files_only) {
                (true, _) => json!({"memory": true}),
                (_, true) => json!({"memory": false}),
                _ => json!({}),
            };
            client.call(Method::POST, &format!("/sandboxes/{id}/pause"), Some(body)).await?;
            out.print(&json!({"sandboxID": id, "state": "paused"}), || println!("paused {id}"));
        }
        SandboxCmd::Resume { id, timeout } => {
            let sb: Sandbox = client
                .json(Method::POST, &format!("/sandboxes/{id}/connect"), Some(json!({"timeout": timeout})))
                .await?;
            out.print(&sb, || println!("resumed {id}"));
        }
        SandboxCmd::Exec { id, user, cwd, env, command } => {
            return exec(client, &id, ExecOptions { argv: command, user, cwd, env }).await;
        }
        SandboxCmd::Files(f) => return files(client, out, f).await,
    }
    Ok(0)
}

async fn rpc(client: &Client, id: &str, method: &str, body: serde_json::Value) -> Result<serde_json::Value> {
    let req = client
        .sandbox_request(id, Method::POST, &format!("/filesystem.Filesystem/{method}"))
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(serde_json::to_vec(&body)?)))?;
    let bytes = crate::client::body_or_error(client.send(req).await?).await?;
    let v: serde_json::Value = serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null);
    Ok(v)
}

async fn files(client: &Client, out: &Output, cmd: FilesCmd) -> Result<i32> {
    match cmd {
        FilesCmd::Ls { id, path, depth } => {
            let v = rpc(client, &id, "ListDir", json!({"path": path, "depth": depth})).await?;
            out.print(&v, || {
                let rows = v["entries"]
                    .as_array()
                    .map(|a| {
                        a.iter()
                            .map(|e| {
                                vec![
                                    e["permissions"].as_str().unwrap_or("").to_owned(),
                                    e["owner"].as_str().unwrap_or("").to_owned(),
                                    e["size"].as_str().unwrap_or("0").to_owned(),
                                    e["path"].as_str().unwrap_or("").to_owned(),
                                ]
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                table(&["MODE", "OWNER", "SIZE", "PATH"], rows);
            });
        }
        FilesCmd::Read { id, path } => {
            let q = format!("/files?path={}", urlencode(&path));
            let bytes = crate::client::body_or_error(
                client.send(client.sandbox_request(&id, Method::GET, &q).body(Full::new(Bytes::new()))?).await?,
            )
            .await?;
            std::io::stdout().write_all(&bytes)?;
        }
        FilesCmd::Write { id, path, source } => {
            let mut data = Vec::new();
            if source == "-" {
                std::io::stdin().read_to_end(&mut data)?;
            } else {
                data = std::fs::read(&source).with_context(|| format!("reading {source}"))?;
            }
            let q = format!("/files?path={}", urlencode(&path));
            let req = client
                .sandbox_request(&id, Method::POST, &q)
                .header(http::header::CONTENT_TYPE, "application/octet-stream")
                .body(Full::new(Bytes::from(data)))?;
            let bytes = crate::client::body_or_error(client.send(req).await?).await?;
            let v: serde_json::Value = serde_json::from_slice(&bytes)?;
            out.print(&v, || println!("wrote {path}"));
        }
        FilesCmd::Mkdir { id, path } => {
            let v = rpc(client, &id, "MakeDir", json!({"path": path})).await?;
            out.print(&v, || println!("created {path}"));
        }
        FilesCmd::Rm { id, path } => {
            let v = rpc(client, &id, "Remove", json!({"path": path})).await?;
            out.print(&v, || println!("removed {path}"));
        }
    }
    Ok(0)
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' | b'/' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

pub async fn template(client: &Client, out: &Output, cmd: TemplateCmd) -> Result<i32> {
    match cmd {
        TemplateCmd::List => {
            let list: Vec<TemplateInfo> = client.json(Method::GET, "/templates", None).await?;
            out.print(&list, || {
                table(
                    &["TEMPLATE", "OWNER", "STATUS", "SIZE", "CREATED", "ERROR"],
                    list.iter()
                        .map(|t| {
                            vec![
                                t.template_id.clone(),
                                t.team.clone().unwrap_or_else(|| "public".into()),
                                t.status.clone(),
                                format!("{} MiB", t.size_bytes / (1024 * 1024)),
                                t.created_at.clone(),
                                t.error.clone().unwrap_or_default(),
                            ]
                        })
                        .collect(),
                )
            });
        }
        TemplateCmd::Build { name, packages, public } => {
            let body = json!({"templateID": name, "packages": packages, "public": public});
            let info: TemplateInfo = client.json(Method::POST, "/templates", Some(body)).await?;
            if info.status == "ready" {
                out.print(&info, || println!("template {name} is ready"));
                return Ok(0);
            }
            let resp = client
                .send(client.request(Method::GET, &format!("/templates/{name}/build")).body(Full::new(Bytes::new()))?)
                .await?;
            let mut body = resp.into_body();
            let mut buf = Vec::new();
            let mut last = None;
            let mut lines = 0usize;
            while let Some(frame) = body.frame().await {
                let Ok(d) = frame?.into_data() else { continue };
                buf.extend_from_slice(&d);
                while let Some(pos) = buf.iter().position(|b| *b == b'\n') {
                    let line: Vec<u8> = buf.drain(..=pos).collect();
                    let p: BuildProgress = serde_json::from_slice(&line)?;
                    if out.json {
                        println!("{}", serde_json::to_string(&p)?);
                    } else if let Some(l) = &p.line {
                        lines += 1;
                        // One status line, redrawn, keeps the terminal readable during a long build.
                        let short: String = l.chars().take(100).collect();
                        eprint!("\r\x1b[2K[{name}] {lines:>5} {short}");
                    }
                    last = Some(p);
                }
            }
            if !out.json {
                eprintln!();
            }
            match last {
                Some(p) if p.status == "ready" => {
                    if !out.json {
                        println!("template {name} is ready");
                    }
                }
                Some(p) => return Err(anyhow!("template {name}: {} {}", p.status, p.line.unwrap_or_default())),
                None => return Err(anyhow!("the build stream of {name} ended without a status")),
            }
        }
        TemplateCmd::Rm { name } => {
            client.call(Method::DELETE, &format!("/templates/{name}"), None).await?;
            out.print(&json!({"removed": name}), || println!("removed template {name}"));
        }
    }
    Ok(0)
}

fn size_fields(size: &PoolSizeArgs, body: &mut serde_json::Map<String, serde_json::Value>) {
    let mut put = |k: &str, v: serde_json::Value| {
        if !v.is_null() {
            body.insert(k.into(), v);
        }
    };
    put("minReady", json!(size.min_ready));
    put("maxSize", json!(size.max_size));
    put("refillConcurrency", json!(size.refill_concurrency));
    put("targetFreeFraction", json!(size.target_free));
    put("emptyWaitMs", json!(size.empty_wait_ms));
    put("onEmpty", json!(size.on_empty));
}

fn print_pools(out: &Output, pools: &[PoolInfo]) {
    out.print(&pools, || {
        table(
            &["POOL", "TEMPLATE", "SHAPE", "READY", "BOOTING", "IN USE", "TARGET", "MIN/MAX", "CLAIMS", "ERROR"],
            pools
                .iter()
                .map(|p| {
                    let s = &p.spec;
                    vec![
                        s.name.clone(),
                        s.template_id.clone(),
                        format!(
                            "{} cpu, {} MiB, {} MiB disk",
                            s.cpu_count.unwrap_or(0),
                            s.memory_mb.unwrap_or(0),
                            s.disk_mb.unwrap_or(0)
                        ),
                        p.ready.to_string(),
                        p.creating.to_string(),
                        p.in_use.to_string(),
                        p.target.to_string(),
                        format!("{}/{}", s.min_ready, s.max_size.unwrap_or(s.min_ready)),
                        format!("{} ({} empty)", p.claims, p.empty_claims),
                        p.last_error.clone().unwrap_or_default(),
                    ]
                })
                .collect(),
        )
    });
}

pub async fn pool(client: &Client, out: &Output, cmd: PoolCmd) -> Result<i32> {
    match cmd {
        PoolCmd::Create { name, template, cpu, memory, disk, size, burst_cpu, burst_secs } => {
            let mut body = serde_json::Map::new();
            body.insert("name".into(), json!(name));
            body.insert("templateID".into(), json!(template));
            for (k, v) in [("cpuCount", json!(cpu)), ("memoryMB", json!(memory)), ("diskSizeMB", json!(disk))] {
                if !v.is_null() {
                    body.insert(k.into(), v);
                }
            }
            size_fields(&size, &mut body);
            if let (Some(c), Some(s)) = (burst_cpu, burst_secs) {
                body.insert("burst".into(), json!({"cpuCount": c, "secs": s}));
            }
            let p: PoolInfo = client.json(Method::POST, "/pools", Some(body.into())).await?;
            print_pools(out, &[p]);
        }
        PoolCmd::List => {
            let pools: Vec<PoolInfo> = client.json(Method::GET, "/pools", None).await?;
            print_pools(out, &pools);
        }
        PoolCmd::Info { name } => {
            let p: PoolInfo = client.json(Method::GET, &format!("/pools/{name}"), None).await?;
            print_pools(out, &[p]);
        }
        PoolCmd::Resize { name, size } => {
            let mut body = serde_json::Map::new();
            size_fields(&size, &mut body);
            if body.is_empty() {
                return Err(anyhow!("nothing to change: give --min-ready, --max-size, --target-free, ..."));
            }
            let p: PoolInfo = client.json(Method::PATCH, &format!("/pools/{name}"), Some(body.into())).await?;
            print_pools(out, &[p]);
        }
        PoolCmd::Rm { name } => {
            client.call(Method::DELETE, &format!("/pools/{name}"), None).await?;
            out.print(&json!({"removed": name}), || println!("removed pool {name}"));
        }
    }
    Ok(0)
}

pub async fn key(client: &Client, out: &Output, cmd: KeyCmd) -> Result<i32> {
    match cmd {
        KeyCmd::Create { team, name, admin } => {
            let body = json!({"team": team, "name": name, "admin": admin});
            let k: ApiKeyInfo = client.json(Method::POST, "/keys", Some(body)).await?;
            out.print(&k, || {
                println!("{}", k.key.as_deref().unwrap_or_default());
                eprintln!("key {} for team {} (shown once: store it now)", k.id, k.team);
            });
        }
        KeyCmd::List => {
            let keys: Vec<ApiKeyInfo> = client.json(Method::GET, "/keys", None).await?;
            out.print(&keys, || {
                table(
                    &["ID", "TEAM", "ADMIN", "PREFIX", "CREATED", "NAME"],
                    keys.iter()
                        .map(|k| {
                            vec![
                                k.id.clone(),
                                k.team.clone(),
                                if k.admin { "yes" } else { "no" }.into(),
                                format!("{}…", k.prefix),
                                k.created_at.clone(),
                                k.name.clone(),
                            ]
                        })
                        .collect(),
                )
            });
        }
        KeyCmd::Rm { id } => {
            client.call(Method::DELETE, &format!("/keys/{id}"), None).await?;
            out.print(&json!({"revoked": id}), || println!("revoked key {id}"));
        }
    }
    Ok(0)
}
