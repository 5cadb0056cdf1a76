//! Saved vector graphs: one file per collection holding every tenant partition's HNSW graph as of
//! a change number, so that opening a store reads the graphs instead of rebuilding them (at a
//! million records a rebuild is minutes; reading is seconds). The rows stay the truth: a graph
//! file that is missing, damaged, or from another collection shape is ignored and the graph is
//! rebuilt from the rows; changes after the file's change number are replayed from the rows.
//!
//! Layout: `WRNGRAPH`, format (u32), change number (u64), then a zstd frame of the body, then
//! the CRC-32 of everything before it. Body: dimension (u32), distance (u8), keeps floats (u8),
//! partitions (u32), each its tenant (u32 length + bytes), its graph's length (u64) and graph.

use std::io::Write;
use std::path::{Path, PathBuf};

use crate::types::Distance;
use crate::vectors::{Bytes, Hnsw};

const MAGIC: &[u8; 8] = b"WRNGRAPH";
const FORMAT: u32 = 1;

/// Where collection `number`'s graphs are saved under the store's directory.
pub fn path(dir: &Path, number: u32) -> PathBuf {
    dir.join("graphs").join(format!("{number}.hnsw"))
}

fn distance_code(d: Distance) -> u8 {
    match d {
        Distance::Cosine => 0,
        Distance::Dot => 1,
        Distance::L2 => 2,
    }
}

/// The uncompressed body for `partitions`.
pub fn encode_body(dim: usize, distance: Distance, keep_floats: bool, partitions: &[(&str, &Hnsw)]) -> Vec<u8> {
    let mut body = Vec::new();
    body.extend_from_slice(&(dim as u32).to_le_bytes());
    body.push(distance_code(distance));
    body.push(keep_floats as u8);
    body.extend_from_slice(&(partitions.len() as u32).to_le_bytes());
    let mut graph = Vec::new();
    for (tenant, g) in partitions {
        body.extend_from_slice(&(tenant.len() as u32).to_le_bytes());
        body.extend_from_slice(tenant.as_bytes());
        graph.clear();
        g.save(&mut graph);
        body.extend_from_slice(&(graph.len() as u64).to_le_bytes());
        body.extend_from_slice(&graph);
    }
    body
}

/// The file's bytes for `body` as of change `seq`.
pub fn frame(seq: u64, body: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut out = Vec::with_capacity(body.len() / 2);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&FORMAT.to_le_bytes());
    out.extend_from_slice(&seq.to_le_bytes());
    // Level 1: the links are close to random numbers, so harder levels gain little and cost
    // seconds at a million records.
    out.extend(zstd::bulk::compress(body, 1)?);
    let crc = crc32fast::hash(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    Ok(out)
}

/// Writes `bytes` to `path` so that a crash leaves the old file or the new one, never a mix.
pub fn write(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().expect("a graph file has a directory");
    std::fs::create_dir_all(dir)?;
    let tmp = path.with_extension("tmp");
    {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)?;
    std::fs::File::open(dir)?.sync_all()
}

/// The partitions saved in `bytes` and their change number; an error says what is wrong.
pub fn decode(
    bytes: &[u8],
    dim: usize,
    distance: Distance,
    keep_floats: bool,
) -> Result<(u64, Vec<(String, Hnsw)>), String> {
    let Some((content, crc)) = bytes.split_last_chunk::<4>() else { return Err("too short".into()) };
    if crc32fast::hash(content) != u32::from_le_bytes(*crc) {
        return Err("checksum mismatch".into());
    }
    let mut r = Bytes(content);
    if r.take(8)? != MAGIC {
        return Err("not a graph file".into());
    }
    let format = r.u32()?;
    if format != FORMAT {
        return Err(format!("format {format}, this Warren reads {FORMAT}"));
    }
    let seq = r.u64()?;
    let body = zstd::stream::decode_all(r.0).map_err(|e| format!("decompressing: {e}"))?;
    let mut r = Bytes(&body);
    let (d, code, floats) = (r.u32()? as usize, r.u8()?, r.u8()? != 0);
    if (d, code, floats) != (dim, distance_code(distance), keep_floats) {
        return Err("saved for another dimension, distance or float setting".into());
    }
    let n = r.u32()?;
    let mut out = Vec::new();
    for _ in 0..n {
        let len = r.u32()? as usize;
        let tenant = String::from_utf8(r.take(len)?.to_vec()).map_err(|_| "a tenant name is not UTF-8")?;
        let len = r.u64()?;
        let mut g = Bytes(r.take(usize::try_from(len).map_err(|_| "a graph too large")?)?);
        let graph = Hnsw::load(distance, dim, keep_floats, &mut g).map_err(|e| format!("tenant {tenant:?}: {e}"))?;
        if g.left() != 0 {
            return Err(format!("tenant {tenant:?}: {} bytes after its graph", g.left()));
        }
        out.push((tenant, graph));
    }
    if r.left() != 0 {
        return Err(format!("{} bytes after the last graph", r.left()));
    }
    Ok((seq, out))
}
