//! `GET /files` (download, gzip on request) and `POST /files` (multipart or octet-stream upload,
//! gzip-encoded bodies, parents created), as the calling user.

use std::io::Write;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use serde::Serialize;
use warren_protocol::connect::Code;

use crate::fs;
use crate::server::{closing, drained, http_error as plain_error, json as json_response, Agent, Body};
use crate::users::User;

fn query(req: &Request<Incoming>) -> Vec<(String, String)> {
    let q = req.uri().query().unwrap_or("");
    q.split('&')
        .filter(|s| !s.is_empty())
        .map(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            let dec =
                |s: &str| percent_encoding::percent_decode_str(&s.replace('+', " ")).decode_utf8_lossy().into_owned();
            (dec(k), dec(v))
        })
        .collect()
}

fn param<'a>(q: &'a [(String, String)], name: &str) -> Option<&'a str> {
    q.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
}

fn status_for(code: Code) -> StatusCode {
    match code {
        Code::NotFound => StatusCode::NOT_FOUND,
        Code::PermissionDenied => StatusCode::FORBIDDEN,
        Code::InvalidArgument | Code::FailedPrecondition => StatusCode::BAD_REQUEST,
        Code::ResourceExhausted => StatusCode::INSUFFICIENT_STORAGE,
        Code::AlreadyExists => StatusCode::CONFLICT,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

fn caller(agent: &Agent, req: &Request<Incoming>, q: &[(String, String)]) -> Result<User, Box<Response<Body>>> {
    agent
        .user_for_files(req.headers(), param(q, "username"))
        .map_err(|e| Box::new(plain_error(StatusCode::UNAUTHORIZED, e.message)))
}

pub async fn download(agent: &Agent, req: Request<Incoming>) -> Response<Body> {
    let q = query(&req);
    let user = match caller(agent, &req, &q) {
        Ok(u) => u,
        Err(r) => return *r,
    };
    let Some(raw) = param(&q, "path") else {
        return plain_error(StatusCode::BAD_REQUEST, "the path query parameter is required");
    };
    let path = match fs::resolve(raw, &user) {
        Ok(p) => p,
        Err(e) => return plain_error(status_for(e.code), e.message),
    };
    let gzip = req
        .headers()
        .get(http::header::ACCEPT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|e| e.trim().starts_with("gzip")));
    // Open as the caller (permissions are checked at open), then stream in chunks from a blocking
    // reader: the agent's memory is the sandbox's, so a file is never held whole.
    let p = path.clone();
    let opened = fs::run_as(user, move || -> Result<(std::fs::File, u64), warren_protocol::connect::Error> {
        let f = std::fs::File::open(&p).map_err(|e| fs::io_error(&e, &p))?;
        let md = f.metadata().map_err(|e| fs::io_error(&e, &p))?;
        if md.is_dir() {
            return Err(warren_protocol::connect::Error::new(
                Code::InvalidArgument,
                format!("path {} is a directory", p.display()),
            ));
        }
        Ok((f, md.len()))
    })
    .await;
    let (file, len) = match opened {
        Ok(f) => f,
        Err(e) => return plain_error(status_for(e.code), e.message),
    };
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(4);
    tokio::task::spawn_blocking(move || {
        use std::io::Read;
        /// Sends what is written to it down the channel, in chunks.
        struct ToChannel(tokio::sync::mpsc::Sender<Result<Bytes, std::io::Error>>);
        impl Write for ToChannel {
            fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
                self.0.blocking_send(Ok(Bytes::copy_from_slice(buf))).map_err(|_| std::io::ErrorKind::BrokenPipe)?;
                Ok(buf.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let mut file = file;
        let mut buf = vec![0u8; 64 * 1024];
        let sink = ToChannel(tx.clone());
        let mut out: Box<dyn Write> = if gzip {
            Box::new(flate2::write::GzEncoder::new(sink, flate2::Compression::fast()))
        } else {
            Box::new(sink)
        };
        let result = (|| -> std::io::Result<()> {
            loop {
                let n = file.read(&mut buf)?;
                if n == 0 {
                    break;
                }
                out.write_all(&buf[..n])?;
            }
            out.flush()?;
            drop(out); // GzEncoder writes its trailer on drop
            Ok(())
        })();
        if let Err(e) = result {
            let _ = tx.blocking_send(Err(e));
        }
    });
    // A read error ends the body early: with Content-Length (or the gzip trailer missing) the
    // client sees a truncated download, never a silently short "success".
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        match rx.recv().await {
            Some(Ok(chunk)) => Some((Ok::<_, std::convert::Infallible>(hyper::body::Frame::data(chunk)), rx)),
            Some(Err(_)) | None => None,
        }
    });
    let mut b = Response::builder().status(200).header(http::header::CONTENT_TYPE, "application/octet-stream");
    if gzip {
        b = b.header(http::header::CONTENT_ENCODING, "gzip");
    } else {
        b = b.header(http::header::CONTENT_LENGTH, len);
    }
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    b = b.header(http::header::CONTENT_DISPOSITION, format!("attachment; filename={name:?}"));
    b.body(http_body_util::StreamBody::new(stream).boxed_unsync()).expect("valid response")
}

#[derive(Serialize)]
struct WriteInfo {
    name: String,
    #[serde(rename = "type")]
    kind: &'static str,
    path: String,
    #[serde(skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    metadata: std::collections::BTreeMap<String, String>,
}

/// The `X-Metadata-<key>` headers of an upload: keys lowercased, keys HTTP tokens, values
/// printable ASCII (what the SDK checks before sending; checked again here for other clients).
fn upload_metadata(headers: &http::HeaderMap) -> Result<Vec<(String, String)>, String> {
    const PREFIX: &str = "x-metadata-";
    let mut out: Vec<(String, String)> = Vec::new();
    for (name, value) in headers {
        let Some(key) = name.as_str().strip_prefix(PREFIX) else { continue };
        let tchar = |c: char| c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c);
        if key.is_empty() || !key.chars().all(tchar) {
            return Err(format!("invalid metadata key {key:?}: use letters, digits and !#$%&'*+-.^_`|~"));
        }
        let value = value
            .to_str()
            .ok()
            .filter(|v| v.chars().all(|c| (' '..='~').contains(&c)))
            .ok_or_else(|| format!("the value of metadata key {key:?} must be printable ASCII"))?;
        if key.len() + fs::METADATA_XATTR_PREFIX.len() > 255 || value.len() > 4096 {
            return Err(format!("metadata key {key:?} or its value is too long (keys 246 bytes, values 4096)"));
        }
        // A repeated header: the last value wins, as it would in a map.
        out.retain(|(k, _)| k != key);
        out.push((key.to_owned(), value.to_owned()));
    }
    Ok(out)
}

/// Streams one uploaded file to disk as `user` (creating its parents), gunzipping it on the way
/// when `gz`. Chunks go through a small bounded channel to a blocking writer, so an upload of any
/// size needs only a few chunks of memory: the agent is charged to the sandbox's memory limit.
async fn store<S, E>(
    user: &User,
    dest: &str,
    gz: bool,
    metadata: &[(String, String)],
    mut chunks: S,
) -> Result<WriteInfo, Box<Response<Body>>>
where
    S: futures_util::Stream<Item = Result<Bytes, E>> + Unpin,
    E: std::fmt::Display,
{
    use futures_util::StreamExt;
    let fail = |status: StatusCode, msg: String| Box::new(plain_error(status, msg));
    let path = fs::resolve(dest, user).map_err(|e| fail(status_for(e.code), e.message))?;
    let (tx, rx) = std::sync::mpsc::sync_channel::<Bytes>(4);
    let p = path.clone();
    let meta = metadata.to_vec();
    let writer = fs::run_as(user.clone(), move || -> Result<(), warren_protocol::connect::Error> {
        if let Some(parent) = p.parent() {
            std::fs::create_dir_all(parent).map_err(|e| fs::io_error(&e, parent))?;
        }
        if p.is_dir() {
            return Err(warren_protocol::connect::Error::new(
                Code::InvalidArgument,
                format!("path {} is a directory", p.display()),
            ));
        }
        let file = std::fs::File::create(&p).map_err(|e| fs::io_error(&e, &p))?;
        let bad_gzip = |e: std::io::Error| {
            warren_protocol::connect::Error::new(Code::InvalidArgument, format!("invalid gzip body: {e}"))
        };
        if gz {
            let mut out = flate2::write::GzDecoder::new(std::io::BufWriter::new(file));
            for chunk in rx {
                out.write_all(&chunk).map_err(|e| match e.kind() {
                    std::io::ErrorKind::InvalidInput | std::io::ErrorKind::InvalidData => bad_gzip(e),
                    _ => fs::io_error(&e, &p),
                })?;
            }
            // finish() notices a truncated stream; then flush the file itself.
            out.finish().map_err(bad_gzip)?.flush().map_err(|e| fs::io_error(&e, &p))?;
        } else {
            let mut out = std::io::BufWriter::new(file);
            for chunk in rx {
                out.write_all(&chunk).map_err(|e| fs::io_error(&e, &p))?;
            }
            out.flush().map_err(|e| fs::io_error(&e, &p))?;
        }
        fs::write_metadata(&p, &meta)
    });
    let feed = async move {
        // After the writer stops (quota, permissions), the rest of the body is read and dropped, up
        // to a bound, so the client — still sending — can read the answer instead of a reset.
        let mut draining: Option<usize> = None;
        while let Some(chunk) = chunks.next().await {
            let chunk = chunk.map_err(|e| fail(StatusCode::BAD_REQUEST, format!("reading the upload: {e}")))?;
            if let Some(drained) = draining.as_mut() {
                *drained += chunk.len();
                if *drained > 256 * 1024 * 1024 {
                    break;
                }
                continue;
            }
            let tx = tx.clone();
            // A full channel means the disk is slower than the network: wait without blocking the runtime.
            let sent = tokio::task::spawn_blocking(move || tx.send(chunk)).await.map(|r| r.is_ok()).unwrap_or(false);
            if !sent {
                draining = Some(0);
            }
        }
        // Dropping the last sender here ends the writer's loop.
        Ok::<(), Box<Response<Body>>>(())
    };
    let (fed, written) = tokio::join!(feed, writer);
    written.map_err(|e| fail(status_for(e.code), e.message))?;
    fed?;
    Ok(WriteInfo {
        name: path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default(),
        kind: "file",
        path: path.display().to_string(),
        metadata: metadata.iter().cloned().collect(),
    })
}

pub async fn upload(agent: &Agent, req: Request<Incoming>) -> Response<Body> {
    let q = query(&req);
    let user = match caller(agent, &req, &q) {
        Ok(u) => u,
        Err(r) => return drained(req.into_body(), *r).await,
    };
    let ct = req.headers().get(http::header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
    let gz = req
        .headers()
        .get(http::header::CONTENT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("gzip"));
    let query_path = param(&q, "path").map(str::to_owned);
    let metadata = match upload_metadata(req.headers()) {
        Ok(m) => m,
        Err(msg) => return drained(req.into_body(), plain_error(StatusCode::BAD_REQUEST, msg)).await,
    };
    let mut written = Vec::new();
    if ct.starts_with("multipart/form-data") {
        let Ok(boundary) = multer::parse_boundary(&ct) else {
            return drained(req.into_body(), plain_error(StatusCode::BAD_REQUEST, "multipart body without a boundary"))
                .await;
        };
        let stream = req.into_body().into_data_stream();
        let mut mp = multer::Multipart::new(stream, boundary);
        loop {
            let field = match mp.next_field().await {
                Ok(Some(f)) => f,
                Ok(None) => break,
                Err(e) => return closing(plain_error(StatusCode::BAD_REQUEST, format!("invalid multipart body: {e}"))),
            };
            // The file name of each part is its destination; a lone part may use ?path= instead.
            let dest = field.file_name().map(str::to_owned).filter(|s| !s.is_empty()).or_else(|| query_path.clone());
            let Some(dest) = dest else {
                let r = plain_error(StatusCode::BAD_REQUEST, "a multipart part has no file name and no path was given");
                return closing(r);
            };
            match store(&user, &dest, gz, &metadata, field).await {
                Ok(w) => written.push(w),
                Err(r) => return closing(*r),
            }
        }
    } else {
        let Some(dest) = query_path else {
            let r = plain_error(StatusCode::BAD_REQUEST, "the path query parameter is required for a raw upload");
            return drained(req.into_body(), r).await;
        };
        let mut body = req.into_body();
        match store(&user, &dest, gz, &metadata, http_body_util::BodyExt::into_data_stream(&mut body)).await {
            Ok(w) => written.push(w),
            // What is left (a refused path, a full disk) is read first.
            Err(r) => return drained(body, *r).await,
        }
    }
    json_response(StatusCode::OK, &written)
}
