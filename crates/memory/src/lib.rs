//! Warren's agent memory store: records with text, an optional vector and metadata, recalled by
//! full text (BM25), by vector (HNSW over int8) or by both fused (reciprocal-rank or linear),
//! always within one tenant's partition. It knows nothing of sandboxes; the daemon serves it
//! under `/v1/memory`.
//!
//! One write path: a write goes to the row store (the value log and redb, the only source of
//! truth) with a change number in the same transaction, then to the in-memory state and the
//! indexes. The text index
//! commits lazily with the change number it reached; on open, changes past it are replayed, and
//! the vector graphs are rebuilt from the rows.

pub mod embed;
pub mod error;
pub mod filter;
pub mod fusion;
mod graphs;
mod rows;
mod text;
pub mod types;
mod values;
pub mod vectors;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use redb::{Database, ReadableTable};
use roaring::RoaringTreemap;
use tracing::{debug, info, warn};

pub use error::MemoryError;
use filter::{Compiled, Fields};
use fusion::{fuse, Ranking};
use rows::{CollectionRow, Dict, RowEntry, StoredRow, StoredVector};
use text::TextIndex;
use types::*;
use vectors::{Hnsw, Quantized};

/// Fewer allowed candidates than this are compared one by one instead of searched in the graph.
const BRUTE_FORCE_BELOW: u64 = 2048;
/// Graph search breadth unless the query names one (at least the fusion window): wider for
/// large partitions, where the same breadth finds fewer of the true neighbours (at a million
/// clustered records, recall@10 0.936 at 128 and 0.955 at 256; at 100,000, 0.970 at 128).
pub fn default_ef(partition_records: usize) -> usize {
    if partition_records >= 250_000 {
        256
    } else {
        128
    }
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

/// What a query needs of a record without reading its row.
struct DocMeta {
    scope: Scope,
    metadata: BTreeMap<String, serde_json::Value>,
    importance: f32,
    created_at_ms: u64,
    updated_at_ms: u64,
    expires_at_ms: Option<u64>,
}

#[derive(Default)]
struct Partition {
    live: RoaringTreemap,
    vectors: Option<Hnsw>,
}

#[derive(Default)]
struct State {
    /// Live records only.
    docs: HashMap<u64, DocMeta>,
    /// Every stored record's key (live or deleted, until purged) → its number: an upsert of a
    /// known key rewrites the same record.
    keys: HashMap<String, u64>,
    partitions: HashMap<String, Partition>,
    /// Metadata fields some record has (filters on others are refused).
    fields: HashSet<String>,
    next_doc: u64,
    /// Stored records (live or not) when training a dictionary last failed: tried again at twice.
    dict_failed_at: usize,
    /// The earliest expiry among live records.
    next_expiry: Option<u64>,
    /// Changes to the vector graphs since they were last saved.
    unsaved: u64,
}

struct Collection {
    number: u32,
    spec: CollectionSpec,
    created_at_ms: u64,
    state: RwLock<State>,
    text: Mutex<TextIndex>,
    text_dir: PathBuf,
    /// The compression dictionary, once trained.
    dict: RwLock<Option<Arc<Dict>>>,
    graphs: Mutex<GraphsSaved>,
}

/// The collection's saved vector graphs.
struct GraphsSaved {
    /// The change number of the saved file, if there is one. While changes are unsaved, change
    /// records after it are kept: a load replays them.
    seq: Option<u64>,
    at: Instant,
}

impl Default for GraphsSaved {
    fn default() -> Self {
        GraphsSaved { seq: None, at: Instant::now() }
    }
}

/// The graphs are saved once this many changes (or a fifth of the records, if more) are unsaved,
/// or any are and the last save is this old: a load replays at most about that much.
const SAVE_GRAPHS_AFTER_CHANGES: u64 = 1000;
const SAVE_GRAPHS_AFTER: std::time::Duration = std::time::Duration::from_secs(600);

impl Collection {
    fn dict(&self) -> Option<Arc<Dict>> {
        self.dict.read().unwrap().clone()
    }
}

fn partition<'a>(spec: &CollectionSpec, st: &'a mut State, tenant: &str) -> &'a mut Partition {
    let dim = spec.dimension as usize;
    st.partitions.entry(tenant.to_owned()).or_insert_with(|| Partition {
        live: RoaringTreemap::new(),
        vectors: (dim > 0).then(|| Hnsw::new(spec.distance, dim, spec.keep_float_vectors)),
    })
}

/// The store. Cheap to share behind an `Arc`; every method is safe to call concurrently.
pub struct MemoryStore {
    db: Database,
    log: values::ValueLog,
    dir: PathBuf,
    limits: Limits,
    collections: RwLock<BTreeMap<String, Arc<Collection>>>,
    /// Serialises writers to the row store so change numbers are given out in commit order.
    write_lock: Mutex<()>,
    models: embed::Models,
}

fn collection_key(owner: &str, name: &str) -> String {
    format!("{owner}/{name}")
}

fn check_name(name: &str) -> Result<(), MemoryError> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if ok {
        Ok(())
    } else {
        Err(MemoryError::BadCollectionName { name: name.into() })
    }
}

fn scope_of(scope: Option<&Scope>) -> Result<&Scope, MemoryError> {
    let s = scope.ok_or(MemoryError::MissingScope)?;
    s.check()?;
    Ok(s)
}

fn check_vector(collection: &str, id: &str, v: &[f32], dim: u32) -> Result<(), MemoryError> {
    if dim == 0 {
        return Err(MemoryError::NoVectors { collection: collection.into() });
    }
    if v.len() != dim as usize {
        return Err(MemoryError::WrongDimension {
            collection: collection.into(),
            id: id.into(),
            got: v.len(),
            want: dim,
        });
    }
    if let Some(index) = v.iter().position(|x| !x.is_finite()) {
        return Err(MemoryError::NotFinite { id: id.into(), index });
    }
    Ok(())
}

impl MemoryStore {
    /// Opens (or creates) the store in `dir`, replaying into the indexes what they missed.
    pub fn open(dir: &Path, limits: Limits) -> Result<MemoryStore, MemoryError> {
        Self::open_with_models(dir, limits, None)
    }

    /// [`MemoryStore::open`], with embedding models for collections that name one taken from
    /// `models` (see [`embed`]).
    pub fn open_with_models(dir: &Path, limits: Limits, models: Option<PathBuf>) -> Result<MemoryStore, MemoryError> {
        std::fs::create_dir_all(dir)?;
        let db = Database::create(dir.join("memory.redb"))?;
        let log = values::ValueLog::open(&dir.join("values"), limits.value_segment_bytes)?;
        {
            let tx = db.begin_write()?;
            {
                tx.open_table(rows::COLLECTIONS)?;
                tx.open_table(rows::ROWS)?;
                tx.open_table(rows::DICTS)?;
                tx.open_table(rows::CHANGES)?;
                let mut meta = tx.open_table(rows::META)?;
                let format = rows::meta(&meta, "format")?;
                if format > rows::FORMAT {
                    return Err(MemoryError::Storage(format!(
                        "the memory store in {} has format {format}, newer than this Warren reads ({}); run a newer Warren",
                        dir.display(),
                        rows::FORMAT
                    )));
                }
                if format == 1 {
                    Self::move_rows_out_of_redb(&tx, &log)?;
                }
                meta.insert("format", rows::FORMAT)?;
            }
            tx.commit()?;
        }
        let store = MemoryStore {
            db,
            log,
            dir: dir.to_owned(),
            limits,
            collections: RwLock::new(BTreeMap::new()),
            write_lock: Mutex::new(()),
            models: embed::Models::new(models),
        };
        store.load()?;
        Ok(store)
    }

    /// The embedding models collections may name.
    pub fn embedding_models(&self) -> Vec<String> {
        self.models.available()
    }

    /// Format 1 to 2: the records kept in redb move to the value log (in the caller's
    /// transaction, after the log is synced).
    fn move_rows_out_of_redb(tx: &redb::WriteTransaction, log: &values::ValueLog) -> Result<(), MemoryError> {
        let mut moved = 0u64;
        {
            let old = tx.open_table(rows::ROWS_V1)?;
            let mut new = tx.open_table(rows::ROWS)?;
            for r in old.iter()? {
                let (k, v) = r?;
                let (row, _) = rows::decode(v.value(), None)?;
                let ptr = log.append(v.value())?;
                let entry = RowEntry { ptr, deleted_at_ms: row.deleted_at_ms.map(|t| t.max(1)).unwrap_or(0) };
                new.insert(k.value(), entry.value())?;
                moved += 1;
            }
        }
        log.sync()?;
        tx.delete_table(rows::ROWS_V1)?;
        info!(records = moved, "memory store: moved records from format 1 to the value log");
        Ok(())
    }

    fn load(&self) -> Result<(), MemoryError> {
        let t0 = Instant::now();
        let tx = self.db.begin_read()?;
        let table = tx.open_table(rows::COLLECTIONS)?;
        let rows_t = tx.open_table(rows::ROWS)?;
        let dicts = tx.open_table(rows::DICTS)?;
        let changes = tx.open_table(rows::CHANGES)?;
        let seq_now = rows::meta(&tx.open_table(rows::META)?, "seq")?;
        let reader = self.log.reader();
        let mut loaded = BTreeMap::new();
        let mut records = 0u64;
        for entry in table.iter()? {
            let (k, v) = entry?;
            let row: CollectionRow = serde_json::from_slice(v.value())
                .map_err(|e| MemoryError::Storage(format!("collection {}: {e}", k.value())))?;
            let text_dir = self.dir.join("text").join(row.number.to_string());
            let mut text = TextIndex::open(&text_dir)?;
            let dict = dicts.get(row.number)?.map(|d| Arc::new(Dict::new(d.value())));
            // An index without any commit (its files lost, or a store from before it) is built
            // from every row rather than from the changes, which are trimmed.
            let rebuild_text = text.is_blank();
            let mut st = State::default();
            let dim = row.spec.dimension as usize;
            // The saved graphs, and the records changed since they were saved.
            let saved = match self.read_graphs(&row, seq_now) {
                Some((seq, parts)) => {
                    let mut changed = HashSet::new();
                    for c in changes.range(seq + 1..)? {
                        let (cnum, doc) = c?.1.value();
                        if cnum == row.number {
                            changed.insert(doc);
                        }
                    }
                    for (tenant, g) in parts {
                        st.partitions.insert(tenant, Partition { live: RoaringTreemap::new(), vectors: Some(g) });
                    }
                    Some((seq, changed))
                }
                None => None,
            };
            let mut replay: Vec<(String, u64, Vec<f32>)> = Vec::new();
            let mut strays = 0u64;
            for r in rows_t.range((row.number, 0)..=(row.number, u64::MAX))? {
                let (k, v) = r?;
                let doc = k.value().1;
                let e = RowEntry::from_value(v.value());
                self.log.note_live(e.ptr);
                let (stored, vector) = rows::decode(&reader.read(e.ptr)?, dict.as_deref())?;
                st.next_doc = st.next_doc.max(doc + 1);
                st.keys.insert(stored.scope.key(&stored.id), doc);
                if e.live() {
                    match &saved {
                        None => Self::apply_live(&row.spec, &mut st, doc, &stored, &vector),
                        Some((_, changed)) => {
                            Self::apply_live_meta(&row.spec, &mut st, doc, &stored);
                            let p = partition(&row.spec, &mut st, &stored.scope.tenant);
                            if let (Some(g), Some(v)) = (&mut p.vectors, vector_values(&vector, dim)) {
                                let known = g.restore_vector(doc, &v);
                                if !known || changed.contains(&doc) {
                                    strays += u64::from(!changed.contains(&doc));
                                    replay.push((stored.scope.tenant.clone(), doc, v));
                                }
                            }
                        }
                    }
                    records += 1;
                    if rebuild_text {
                        text.put(doc, &stored.scope.tenant, stored.text.as_deref(), seq_now)?;
                    }
                }
            }
            if let Some((seq, _)) = &saved {
                // Records deleted or changed since the save: their old nodes become tombstones
                // and their new vectors go in.
                let mut gone = 0;
                for p in st.partitions.values_mut() {
                    if let Some(g) = &mut p.vectors {
                        gone += g.finish_restore();
                    }
                }
                for (tenant, doc, v) in &replay {
                    if let Some(g) = &mut partition(&row.spec, &mut st, tenant).vectors {
                        g.insert(*doc, v);
                    }
                }
                st.unsaved = gone + replay.len() as u64;
                if strays > 0 {
                    warn!(
                        collection = %k.value(),
                        records = strays,
                        "the saved vector graph lacked records no change accounts for; they were added"
                    );
                }
                info!(collection = %k.value(), saved_at = seq, replayed = st.unsaved, "memory store: vector graphs read");
            }
            // Changes the text index has not committed: redo them from the rows.
            let from = text.committed() + 1;
            for c in changes.range(from..)? {
                let (seq, target) = c?;
                let (cnum, doc) = target.value();
                if cnum != row.number {
                    continue;
                }
                let live = rows_t.get((cnum, doc))?.map(|v| RowEntry::from_value(v.value())).filter(|e| e.live());
                match live {
                    Some(e) => {
                        let (r, _) = rows::decode(&reader.read(e.ptr)?, dict.as_deref())?;
                        text.put(doc, &r.scope.tenant, r.text.as_deref(), seq.value())?
                    }
                    None => text.put(doc, "", None, seq.value())?,
                }
            }
            text.commit()?;
            let coll = Collection {
                number: row.number,
                spec: row.spec,
                created_at_ms: row.created_at_ms,
                state: RwLock::new(st),
                text: Mutex::new(text),
                text_dir,
                dict: RwLock::new(dict),
                graphs: Mutex::new(GraphsSaved { seq: saved.map(|(seq, _)| seq), at: Instant::now() }),
            };
            loaded.insert(k.value().to_owned(), Arc::new(coll));
        }
        drop((table, rows_t, dicts, changes, tx, reader));
        if !loaded.is_empty() {
            info!(
                collections = loaded.len(),
                records,
                took_ms = t0.elapsed().as_millis() as u64,
                "memory store loaded"
            );
        }
        *self.collections.write().unwrap() = loaded;
        Ok(())
    }

    /// Puts a live record into the in-memory state and the vector graph.
    fn apply_live(spec: &CollectionSpec, st: &mut State, doc: u64, row: &StoredRow, vector: &StoredVector) {
        Self::apply_live_meta(spec, st, doc, row);
        let p = partition(spec, st, &row.scope.tenant);
        if let Some(g) = &mut p.vectors {
            match vector_values(vector, spec.dimension as usize) {
                Some(v) => g.insert(doc, &v),
                None => {
                    g.remove(doc);
                }
            }
            st.unsaved += 1;
        }
    }

    /// The collection's saved graphs, when there is a usable file of them.
    fn read_graphs(&self, row: &CollectionRow, seq_now: u64) -> Option<(u64, Vec<(String, Hnsw)>)> {
        let spec = &row.spec;
        if spec.dimension == 0 {
            return None;
        }
        let path = graphs::path(&self.dir, row.number);
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
            Err(e) => {
                warn!(file = %path.display(), error = %e, "cannot read the saved vector graphs; rebuilding them from the rows");
                return None;
            }
        };
        match graphs::decode(&bytes, spec.dimension as usize, spec.distance, spec.keep_float_vectors) {
            Ok((seq, parts)) if seq <= seq_now => Some((seq, parts)),
            Ok((seq, _)) => {
                warn!(file = %path.display(), saved_at = seq, rows_at = seq_now, "the saved vector graphs are ahead of the rows; rebuilding them from the rows");
                None
            }
            Err(e) => {
                warn!(file = %path.display(), error = %e, "ignoring damaged saved vector graphs; rebuilding them from the rows");
                None
            }
        }
    }

    /// Saves the vector graphs of collections that changed enough since their last save (every
    /// changed one when `force`). Returns how many were saved.
    pub fn save_graphs(&self, force: bool) -> Result<usize, MemoryError> {
        let colls: Vec<Arc<Collection>> = self.collections.read().unwrap().values().cloned().collect();
        let mut saved = 0;
        for c in colls {
            if c.spec.dimension == 0 {
                continue;
            }
            // Writers wait while the graphs are copied out (not while they are compressed and
            // written), so the copy is exactly the rows as of one change number.
            let (seq, changes, body) = {
                let _w = self.write_lock.lock().unwrap();
                let st = c.state.read().unwrap();
                let due = {
                    let g = c.graphs.lock().unwrap();
                    let enough = SAVE_GRAPHS_AFTER_CHANGES.max(st.docs.len() as u64 / 5);
                    st.unsaved > 0 && (force || st.unsaved >= enough || g.at.elapsed() >= SAVE_GRAPHS_AFTER)
                };
                if !due {
                    continue;
                }
                let seq = rows::meta(&self.db.begin_read()?.open_table(rows::META)?, "seq")?;
                let mut parts: Vec<(&str, &Hnsw)> =
                    st.partitions.iter().filter_map(|(t, p)| Some((t.as_str(), p.vectors.as_ref()?))).collect();
                parts.sort_by_key(|p| p.0);
                let body =
                    graphs::encode_body(c.spec.dimension as usize, c.spec.distance, c.spec.keep_float_vectors, &parts);
                (seq, st.unsaved, body)
            };
            let t0 = Instant::now();
            let path = graphs::path(&self.dir, c.number);
            let bytes = graphs::frame(seq, &body)?;
            drop(body);
            graphs::write(&path, &bytes)?;
            {
                // A collection deleted while its graphs were being written leaves no file behind.
                let _w = self.write_lock.lock().unwrap();
                let registered = self.collections.read().unwrap().values().any(|x| Arc::ptr_eq(x, &c));
                if !registered {
                    let _ = std::fs::remove_file(&path);
                    continue;
                }
            }
            c.state.write().unwrap().unsaved -= changes;
            *c.graphs.lock().unwrap() = GraphsSaved { seq: Some(seq), at: Instant::now() };
            debug!(collection = %c.spec.name, seq, bytes = bytes.len(), took_ms = t0.elapsed().as_millis() as u64, "memory store: vector graphs saved");
            saved += 1;
        }
        Ok(saved)
    }

    /// Commits the text indexes and saves every changed vector graph: what a clean shutdown does
    /// so that the next open replays nothing.
    pub fn checkpoint(&self) -> Result<(), MemoryError> {
        self.flush_text()?;
        self.save_graphs(true)?;
        Ok(())
    }

    /// Puts a live record into the in-memory state, but not into the vector graph.
    fn apply_live_meta(spec: &CollectionSpec, st: &mut State, doc: u64, row: &StoredRow) {
        st.fields.extend(row.metadata.keys().cloned());
        if let Some(e) = row.expires_at_ms {
            st.next_expiry = Some(st.next_expiry.map_or(e, |n| n.min(e)));
        }
        partition(spec, st, &row.scope.tenant).live.insert(doc);
        st.docs.insert(
            doc,
            DocMeta {
                scope: row.scope.clone(),
                metadata: row.metadata.clone(),
                importance: row.importance,
                created_at_ms: row.created_at_ms,
                updated_at_ms: row.updated_at_ms,
                expires_at_ms: row.expires_at_ms,
            },
        );
    }

    /// Takes a record out of the in-memory state and the vector graph.
    fn apply_gone(st: &mut State, doc: u64) {
        if let Some(m) = st.docs.remove(&doc) {
            if let Some(p) = st.partitions.get_mut(&m.scope.tenant) {
                p.live.remove(doc);
                if let Some(g) = &mut p.vectors {
                    g.remove(doc);
                    g.compact_if_needed();
                    st.unsaved += 1;
                }
            }
        }
    }

    fn collection(&self, owner: &str, name: &str) -> Result<Arc<Collection>, MemoryError> {
        self.collections
            .read()
            .unwrap()
            .get(&collection_key(owner, name))
            .cloned()
            .ok_or_else(|| MemoryError::UnknownCollection { name: name.into() })
    }

    fn info(coll: &Collection) -> CollectionInfo {
        CollectionInfo {
            spec: coll.spec.clone(),
            created_at_ms: coll.created_at_ms,
            records: coll.state.read().unwrap().docs.len() as u64,
        }
    }

    /// Creates a collection; the same spec again is not an error (idempotent create).
    pub fn create_collection(&self, owner: &str, mut spec: CollectionSpec) -> Result<CollectionInfo, MemoryError> {
        check_name(&spec.name)?;
        if let Some(name) = &spec.embedding_model {
            // Loads the model now: a collection is only made with a model that runs here.
            let dim = self.models.get(name)?.dimension() as u32;
            if spec.dimension == 0 {
                spec.dimension = dim;
            } else if spec.dimension != dim {
                return Err(MemoryError::OutOfRange {
                    field: "dimension",
                    got: spec.dimension.to_string(),
                    allowed: format!("{dim} (the size of {name}'s vectors) or left out"),
                });
            }
        }
        if spec.dimension > self.limits.max_dimension {
            return Err(MemoryError::OutOfRange {
                field: "dimension",
                got: spec.dimension.to_string(),
                allowed: format!("0 (no vectors) to {}", self.limits.max_dimension),
            });
        }
        let key = collection_key(owner, &spec.name);
        let _w = self.write_lock.lock().unwrap();
        let mut map = self.collections.write().unwrap();
        if let Some(c) = map.get(&key) {
            return if c.spec == spec {
                Ok(Self::info(c))
            } else {
                Err(MemoryError::CollectionExists { name: spec.name })
            };
        }
        let tx = self.db.begin_write()?;
        let number;
        let created_at_ms = now_ms();
        {
            let mut meta = tx.open_table(rows::META)?;
            number = rows::meta(&meta, "collections")? as u32 + 1;
            meta.insert("collections", number as u64)?;
            let row = CollectionRow { number, spec: spec.clone(), created_at_ms };
            let mut t = tx.open_table(rows::COLLECTIONS)?;
            t.insert(key.as_str(), serde_json::to_vec(&row).expect("serializes").as_slice())?;
        }
        let text_dir = self.dir.join("text").join(number.to_string());
        // A leftover index of a number never committed before a crash.
        let _ = std::fs::remove_dir_all(&text_dir);
        let text = TextIndex::open(&text_dir)?;
        tx.commit()?;
        let coll = Arc::new(Collection {
            number,
            spec,
            created_at_ms,
            state: RwLock::new(State::default()),
            text: Mutex::new(text),
            text_dir,
            dict: RwLock::new(None),
            graphs: Mutex::new(GraphsSaved::default()),
        });
        let info = Self::info(&coll);
        map.insert(key, coll);
        Ok(info)
    }

    pub fn list_collections(&self, owner: &str) -> Vec<CollectionInfo> {
        let prefix = format!("{owner}/");
        self.collections
            .read()
            .unwrap()
            .iter()
            .filter(|(k, _)| k.starts_with(&prefix))
            .map(|(_, c)| Self::info(c))
            .collect()
    }

    pub fn collection_info(&self, owner: &str, name: &str) -> Result<CollectionInfo, MemoryError> {
        Ok(Self::info(self.collection(owner, name)?.as_ref()))
    }

    /// Deletes a collection with every record in it.
    pub fn delete_collection(&self, owner: &str, name: &str) -> Result<(), MemoryError> {
        let key = collection_key(owner, name);
        let _w = self.write_lock.lock().unwrap();
        let coll = self.collection(owner, name)?;
        let tx = self.db.begin_write()?;
        let mut dead = Vec::new();
        {
            tx.open_table(rows::COLLECTIONS)?.remove(key.as_str())?;
            tx.open_table(rows::DICTS)?.remove(coll.number)?;
            let mut rows_t = tx.open_table(rows::ROWS)?;
            let docs: Vec<(u64, RowEntry)> = rows_t
                .range((coll.number, 0)..=(coll.number, u64::MAX))?
                .map(|r| r.map(|(k, v)| (k.value().1, RowEntry::from_value(v.value()))))
                .collect::<Result<_, _>>()?;
            for (d, e) in docs {
                rows_t.remove((coll.number, d))?;
                dead.push(e.ptr);
            }
            let mut changes = tx.open_table(rows::CHANGES)?;
            changes.retain(|_, (c, _)| c != coll.number)?;
        }
        tx.commit()?;
        for p in dead {
            self.log.note_dead(p);
        }
        self.collections.write().unwrap().remove(&key);
        if let Err(e) = std::fs::remove_dir_all(&coll.text_dir) {
            warn!(error = %e, dir = %coll.text_dir.display(), "removing a deleted collection's text index");
        }
        let graphs = graphs::path(&self.dir, coll.number);
        if let Err(e) = std::fs::remove_file(&graphs) {
            if e.kind() != std::io::ErrorKind::NotFound {
                warn!(error = %e, file = %graphs.display(), "removing a deleted collection's vector graphs");
            }
        }
        Ok(())
    }

    fn check_record(&self, coll: &Collection, r: &RecordInput) -> Result<(), MemoryError> {
        let l = &self.limits;
        if r.id.is_empty() || r.id.len() > 512 || r.id.contains('\0') {
            return Err(MemoryError::BadRecord {
                id: r.id.clone(),
                detail: "ids are 1 to 512 bytes without NUL".into(),
            });
        }
        if let Some(t) = &r.text {
            if t.len() > l.max_text_bytes {
                return Err(MemoryError::TooLarge {
                    what: format!("record {:?}: the text ({} bytes)", r.id, t.len()),
                    got: t.len(),
                    max: l.max_text_bytes,
                    hint: " bytes; split it into several records",
                });
            }
        }
        let meta_len = serde_json::to_vec(&r.metadata).map(|v| v.len()).unwrap_or(usize::MAX);
        if meta_len > l.max_metadata_bytes {
            return Err(MemoryError::TooLarge {
                what: format!("record {:?}: the metadata ({meta_len} bytes of JSON)", r.id),
                got: meta_len,
                max: l.max_metadata_bytes,
                hint: " bytes",
            });
        }
        if let Some(name) = r.metadata.keys().find(|k| filter::BUILTIN_FIELDS.contains(&k.as_str()) || is_operator(k)) {
            return Err(MemoryError::BadRecord {
                id: r.id.clone(),
                detail: format!("metadata field {name:?} is reserved"),
            });
        }
        if let Some(v) = &r.vector {
            check_vector(&coll.spec.name, &r.id, v, coll.spec.dimension)?;
        }
        if r.text.is_none() && r.vector.is_none() {
            return Err(MemoryError::BadRecord { id: r.id.clone(), detail: "give it text, a vector or both".into() });
        }
        if let Some(i) = r.importance {
            if !(0.0..=1.0).contains(&i) {
                return Err(MemoryError::OutOfRange {
                    field: "importance",
                    got: i.to_string(),
                    allowed: "0 to 1".into(),
                });
            }
        }
        Ok(())
    }

    /// Inserts or replaces records (by id within the scope). Returns how many were written.
    /// Either every record is written or none (one transaction).
    pub fn upsert(&self, owner: &str, name: &str, req: &UpsertRequest) -> Result<usize, MemoryError> {
        let scope = scope_of(req.scope.as_ref())?;
        let coll = self.collection(owner, name)?;
        if req.records.len() > self.limits.max_records_per_upsert {
            return Err(MemoryError::TooLarge {
                what: "the number of records in one upsert".into(),
                got: req.records.len(),
                max: self.limits.max_records_per_upsert,
                hint: "; send them in several calls",
            });
        }
        for r in &req.records {
            self.check_record(&coll, r)?;
        }
        // Vectors for text written without one, computed before any lock is taken.
        let mut embedded: Vec<Option<Vec<f32>>> = vec![None; req.records.len()];
        if let Some(model) = &coll.spec.embedding_model {
            let todo: Vec<usize> = (0..req.records.len())
                .filter(|&i| req.records[i].vector.is_none() && req.records[i].text.is_some())
                .collect();
            if !todo.is_empty() {
                let texts: Vec<&str> = todo.iter().map(|&i| req.records[i].text.as_deref().unwrap_or("")).collect();
                let vectors = self.models.get(model)?.embed(&texts)?;
                for (i, v) in todo.into_iter().zip(vectors) {
                    embedded[i] = Some(v);
                }
            }
        }
        // The last of several records with one id wins, as if sent one after the other.
        let mut last: HashMap<&str, usize> = HashMap::new();
        for (i, r) in req.records.iter().enumerate() {
            last.insert(&r.id, i);
        }
        let now = now_ms();
        let _w = self.write_lock.lock().unwrap();
        let mut st = coll.state.write().unwrap();
        let mut next_doc = st.next_doc;
        let mut written: Vec<(u64, StoredRow, StoredVector, u64)> = Vec::with_capacity(last.len());
        for (i, r) in req.records.iter().enumerate() {
            if last[r.id.as_str()] != i {
                continue;
            }
            let (doc, created) = match st.keys.get(&scope.key(&r.id)) {
                Some(&d) => (d, st.docs.get(&d).map(|m| m.created_at_ms).unwrap_or(now)),
                None => {
                    next_doc += 1;
                    (next_doc - 1, now)
                }
            };
            let row = StoredRow {
                id: r.id.clone(),
                scope: scope.clone(),
                text: r.text.clone(),
                metadata: r.metadata.clone(),
                importance: r.importance.unwrap_or(0.0),
                created_at_ms: created,
                updated_at_ms: now,
                expires_at_ms: r.expires_at_ms,
                deleted_at_ms: None,
            };
            let vector = match r.vector.as_ref().or(embedded[i].as_ref()) {
                None => StoredVector::None,
                Some(v) => {
                    let v = vectors::prepare(coll.spec.distance, v);
                    let q = Quantized::from_f32(&v).to_bytes();
                    if coll.spec.keep_float_vectors {
                        let mut b: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
                        b.extend_from_slice(&q);
                        StoredVector::Float(b)
                    } else {
                        StoredVector::Int8(q)
                    }
                }
            };
            written.push((doc, row, vector, 0));
        }
        let new_dict = self.train_dict(&coll, &mut st, &written)?.map(|b| (Arc::new(Dict::new(&b)), b));
        let dict = new_dict.as_ref().map(|(d, _)| d.clone()).or_else(|| coll.dict());
        let mut dead = Vec::new();
        let tx = self.db.begin_write()?;
        {
            let mut rows_t = tx.open_table(rows::ROWS)?;
            let mut changes = tx.open_table(rows::CHANGES)?;
            let mut meta = tx.open_table(rows::META)?;
            let mut seq = rows::meta(&meta, "seq")?;
            let mut encoder = rows::Encoder::new(dict.as_deref())?;
            for (doc, row, vector, row_seq) in written.iter_mut() {
                let ptr = self.log.append(&encoder.encode(row, vector)?)?;
                let entry = RowEntry { ptr, deleted_at_ms: 0 };
                if let Some(old) = rows_t.insert((coll.number, *doc), entry.value())? {
                    dead.push(RowEntry::from_value(old.value()).ptr);
                }
                seq += 1;
                changes.insert(seq, (coll.number, *doc))?;
                *row_seq = seq;
            }
            meta.insert("seq", seq)?;
            if let Some((_, bytes)) = &new_dict {
                tx.open_table(rows::DICTS)?.insert(coll.number, bytes.as_slice())?;
            }
        }
        self.log.sync()?;
        tx.commit()?;
        for p in dead {
            self.log.note_dead(p);
        }
        if let Some((d, _)) = new_dict {
            *coll.dict.write().unwrap() = Some(d);
        }
        st.next_doc = next_doc;
        let mut text = coll.text.lock().unwrap();
        for (doc, row, vector, seq) in &written {
            let key = row.scope.key(&row.id);
            Self::apply_gone(&mut st, *doc);
            st.keys.insert(key, *doc);
            let expired = row.expires_at_ms.is_some_and(|e| e <= now);
            if !expired {
                Self::apply_live(&coll.spec, &mut st, *doc, row, vector);
            }
            let t = if expired { None } else { row.text.as_deref() };
            text.put(*doc, &row.scope.tenant, t, *seq)?;
        }
        Ok(written.len())
    }

    /// Trains the collection's compression dictionary once it has enough records (this batch's
    /// and, when that is not enough, the latest stored ones): the new dictionary's bytes, to be
    /// stored with the batch. `None` when the collection has one or is not ready.
    fn train_dict(
        &self,
        coll: &Collection,
        st: &mut State,
        batch: &[(u64, StoredRow, StoredVector, u64)],
    ) -> Result<Option<Vec<u8>>, MemoryError> {
        let stored = st.keys.len();
        let total = stored + batch.len();
        if coll.dict().is_some() || total < rows::DICT_TRAIN_AT || total < st.dict_failed_at * 2 {
            return Ok(None);
        }
        let mut samples: Vec<Vec<u8>> =
            batch.iter().take(4 * rows::DICT_TRAIN_AT).map(|b| rows::row_json(&b.1)).collect();
        if samples.len() < rows::DICT_TRAIN_AT {
            let tx = self.db.begin_read()?;
            let rows_t = tx.open_table(rows::ROWS)?;
            let reader = self.log.reader();
            for r in rows_t.range((coll.number, 0)..=(coll.number, u64::MAX))?.rev() {
                let (_, v) = r?;
                let (row, _) = rows::decode(&reader.read(RowEntry::from_value(v.value()).ptr)?, None)?;
                samples.push(rows::row_json(&row));
                if samples.len() >= 2 * rows::DICT_TRAIN_AT {
                    break;
                }
            }
        }
        match Dict::train(&samples) {
            Some(bytes) => Ok(Some(bytes)),
            None => {
                st.dict_failed_at = total;
                Ok(None)
            }
        }
    }

    /// A live record by id, in exactly the scope it was written with.
    pub fn get(&self, owner: &str, name: &str, scope: Option<&Scope>, id: &str) -> Result<Record, MemoryError> {
        let scope = scope_of(scope)?;
        let coll = self.collection(owner, name)?;
        let doc = {
            let st = coll.state.read().unwrap();
            st.keys.get(&scope.key(id)).copied().filter(|d| st.docs.contains_key(d))
        };
        let now = now_ms();
        let found = doc.map(|d| self.read_record(&coll, d, true)).transpose()?.flatten();
        match found {
            Some(r) if r.expires_at_ms.is_none_or(|e| e > now) => Ok(r),
            _ => Err(MemoryError::NotFound { id: id.into() }),
        }
    }

    fn read_record(&self, coll: &Collection, doc: u64, with_vector: bool) -> Result<Option<Record>, MemoryError> {
        let reader = self.log.reader();
        let tx = self.db.begin_read()?;
        let t = tx.open_table(rows::ROWS)?;
        let Some(e) = t.get((coll.number, doc))?.map(|v| RowEntry::from_value(v.value())) else { return Ok(None) };
        if !e.live() {
            return Ok(None);
        }
        let (row, vector) = rows::decode(&reader.read(e.ptr)?, coll.dict().as_deref())?;
        Ok(Some(Record {
            vector: if with_vector { vector_values(&vector, coll.spec.dimension as usize) } else { None },
            id: row.id,
            scope: row.scope,
            text: row.text,
            metadata: row.metadata,
            importance: row.importance,
            created_at_ms: row.created_at_ms,
            updated_at_ms: row.updated_at_ms,
            expires_at_ms: row.expires_at_ms,
        }))
    }

    /// Deletes records by id in exactly their scope: they disappear from reads and queries at
    /// once and their rows are purged later. Returns how many existed.
    pub fn delete(&self, owner: &str, name: &str, scope: Option<&Scope>, ids: &[String]) -> Result<usize, MemoryError> {
        let scope = scope_of(scope)?;
        let coll = self.collection(owner, name)?;
        let _w = self.write_lock.lock().unwrap();
        let mut st = coll.state.write().unwrap();
        let docs: Vec<u64> = ids
            .iter()
            .filter_map(|id| st.keys.get(&scope.key(id)).copied())
            .filter(|d| st.docs.contains_key(d))
            .collect();
        self.mark_deleted(&coll, &mut st, &docs, now_ms())?;
        Ok(docs.len())
    }

    /// Marks rows deleted at `when` and takes them out of the indexes.
    fn mark_deleted(&self, coll: &Collection, st: &mut State, docs: &[u64], when: u64) -> Result<(), MemoryError> {
        if docs.is_empty() {
            return Ok(());
        }
        let tx = self.db.begin_write()?;
        let mut seqs = Vec::with_capacity(docs.len());
        {
            let mut rows_t = tx.open_table(rows::ROWS)?;
            let mut changes = tx.open_table(rows::CHANGES)?;
            let mut meta = tx.open_table(rows::META)?;
            let mut seq = rows::meta(&meta, "seq")?;
            for &d in docs {
                let Some(mut e) = rows_t.get((coll.number, d))?.map(|v| RowEntry::from_value(v.value())) else {
                    continue;
                };
                e.deleted_at_ms = when.max(1);
                seq += 1;
                rows_t.insert((coll.number, d), e.value())?;
                changes.insert(seq, (coll.number, d))?;
                seqs.push((d, seq));
            }
            meta.insert("seq", seq)?;
        }
        tx.commit()?;
        let mut text = coll.text.lock().unwrap();
        for (d, seq) in seqs {
            Self::apply_gone(st, d);
            text.put(d, "", None, seq)?;
        }
        Ok(())
    }

    /// Deletes what has expired, when something may have.
    fn expire(&self, coll: &Collection) -> Result<(), MemoryError> {
        let now = now_ms();
        if coll.state.read().unwrap().next_expiry.is_none_or(|e| e > now) {
            return Ok(());
        }
        let _w = self.write_lock.lock().unwrap();
        let mut st = coll.state.write().unwrap();
        let gone: Vec<u64> =
            st.docs.iter().filter(|(_, m)| m.expires_at_ms.is_some_and(|e| e <= now)).map(|(&d, _)| d).collect();
        self.mark_deleted(coll, &mut st, &gone, now)?;
        st.next_expiry = st.docs.values().filter_map(|m| m.expires_at_ms).min();
        Ok(())
    }

    /// Removes rows deleted longer ago than the purge delay, and change records every index has
    /// passed. Returns how many rows went.
    pub fn purge(&self) -> Result<usize, MemoryError> {
        let colls: Vec<Arc<Collection>> = self.collections.read().unwrap().values().cloned().collect();
        for c in &colls {
            self.expire(c)?;
        }
        let cutoff = now_ms().saturating_sub(self.limits.purge_after_secs * 1000);
        let _w = self.write_lock.lock().unwrap();
        let mut purged = 0;
        let tx = self.db.begin_write()?;
        let mut dead = Vec::new();
        {
            let mut rows_t = tx.open_table(rows::ROWS)?;
            let reader = self.log.reader();
            for c in &colls {
                let mut st = c.state.write().unwrap();
                let mut doomed = Vec::new();
                for r in rows_t.range((c.number, 0)..=(c.number, u64::MAX))? {
                    let (k, v) = r?;
                    let e = RowEntry::from_value(v.value());
                    if !e.live() && e.deleted_at_ms <= cutoff {
                        doomed.push((k.value().1, e.ptr));
                    }
                }
                let dict = c.dict();
                for (d, ptr) in doomed {
                    let (row, _) = rows::decode(&reader.read(ptr)?, dict.as_deref())?;
                    let key = row.scope.key(&row.id);
                    rows_t.remove((c.number, d))?;
                    if st.keys.get(&key) == Some(&d) {
                        st.keys.remove(&key);
                    }
                    dead.push(ptr);
                    purged += 1;
                }
            }
            // Changes every text index has committed are no longer needed for a replay (an index
            // with nothing pending has committed all it was given), nor those before saved graphs
            // that have changed since.
            let upto = colls
                .iter()
                .map(|c| {
                    let t = c.text.lock().unwrap();
                    let text = if t.has_pending() { t.committed() } else { u64::MAX };
                    let graphs = match c.state.read().unwrap().unsaved {
                        0 => u64::MAX,
                        _ => c.graphs.lock().unwrap().seq.unwrap_or(u64::MAX),
                    };
                    text.min(graphs)
                })
                .min()
                .unwrap_or(u64::MAX);
            let mut changes = tx.open_table(rows::CHANGES)?;
            changes.retain(|seq, _| seq > upto)?;
        }
        tx.commit()?;
        for p in dead {
            self.log.note_dead(p);
        }
        self.compact_values()?;
        Ok(purged)
    }

    /// Copies the records still used out of value segments that are mostly garbage, then removes
    /// those segments. The caller holds the write lock.
    fn compact_values(&self) -> Result<(), MemoryError> {
        let sparse = self.log.sparse_segments();
        if sparse.is_empty() {
            return Ok(());
        }
        let tx = self.db.begin_write()?;
        let mut moved = 0u64;
        {
            let mut rows_t = tx.open_table(rows::ROWS)?;
            let reader = self.log.reader();
            let mut moves = Vec::new();
            for r in rows_t.iter()? {
                let (k, v) = r?;
                let e = RowEntry::from_value(v.value());
                if sparse.contains(&e.ptr.segment) {
                    moves.push((k.value(), e));
                }
            }
            for (k, mut e) in moves {
                let bytes = reader.read(e.ptr)?;
                self.log.note_dead(e.ptr);
                e.ptr = self.log.append(&bytes)?;
                rows_t.insert(k, e.value())?;
                moved += 1;
            }
        }
        self.log.sync()?;
        tx.commit()?;
        for n in &sparse {
            self.log.remove_segment(*n)?;
        }
        info!(segments = sparse.len(), records = moved, "memory store: compacted value segments");
        Ok(())
    }

    /// Bytes in the value log, and how many of them live records (or deleted ones not yet
    /// purged) use.
    pub fn value_log_sizes(&self) -> (u64, u64) {
        self.log.sizes()
    }

    /// Commits the text indexes' pending changes (searchable and durable).
    pub fn flush(&self) -> Result<(), MemoryError> {
        self.flush_text()?;
        self.save_graphs(false)?;
        Ok(())
    }

    fn flush_text(&self) -> Result<(), MemoryError> {
        let colls: Vec<Arc<Collection>> = self.collections.read().unwrap().values().cloned().collect();
        for c in colls {
            c.text.lock().unwrap().commit()?;
        }
        Ok(())
    }

    /// Recalls records for a query: each channel asked gives its best `window` records of the
    /// scope that pass the filter, the rankings are fused, then weighed by age and importance.
    pub fn query(&self, owner: &str, name: &str, q: &QueryRequest) -> Result<QueryResponse, MemoryError> {
        let t0 = Instant::now();
        let scope = scope_of(q.scope.as_ref())?;
        let coll = self.collection(owner, name)?;
        let l = &self.limits;
        if q.limit == 0 || q.limit > l.max_limit {
            return Err(MemoryError::OutOfRange {
                field: "limit",
                got: q.limit.to_string(),
                allowed: format!("1 to {}", l.max_limit),
            });
        }
        let text_q = q.text.as_deref().filter(|t| !t.trim().is_empty());
        if text_q.is_none() && q.vector.is_none() {
            return Err(MemoryError::EmptyQuery);
        }
        if let Some(t) = text_q {
            if t.len() > l.max_text_bytes {
                return Err(MemoryError::TooLarge {
                    what: "the query text".into(),
                    got: t.len(),
                    max: l.max_text_bytes,
                    hint: " bytes",
                });
            }
        }
        if let Some(v) = &q.vector {
            check_vector(&coll.spec.name, "(query)", v, coll.spec.dimension)?;
        }
        // Text asked without a vector, in a collection with a model: both channels answer.
        let embedded = match (&coll.spec.embedding_model, &q.vector, text_q) {
            (Some(model), None, Some(t)) => self.models.get(model)?.embed(&[t])?.pop(),
            _ => None,
        };
        let query_vector = q.vector.as_ref().or(embedded.as_ref());
        let f = &q.fusion;
        if !(f.k.is_finite() && f.k >= 0.0) {
            return Err(MemoryError::OutOfRange { field: "fusion.k", got: f.k.to_string(), allowed: "≥ 0".into() });
        }
        for (field, w) in [("fusion.weights.text", f.weights.text), ("fusion.weights.vector", f.weights.vector)] {
            if !(w.is_finite() && w >= 0.0) {
                return Err(MemoryError::OutOfRange { field, got: w.to_string(), allowed: "≥ 0".into() });
            }
        }
        if f.window > l.max_window {
            return Err(MemoryError::OutOfRange {
                field: "fusion.window",
                got: f.window.to_string(),
                allowed: format!("up to {}", l.max_window),
            });
        }
        if let Some(ef) = q.ef {
            if ef == 0 || ef > l.max_window {
                return Err(MemoryError::OutOfRange {
                    field: "ef",
                    got: ef.to_string(),
                    allowed: format!("1 to {}", l.max_window),
                });
            }
        }
        if let Some(d) = &q.decay {
            if !(d.half_life_secs.is_finite() && d.half_life_secs > 0.0 && (0.0..=1.0).contains(&d.floor)) {
                return Err(MemoryError::OutOfRange {
                    field: "decay",
                    got: format!("halfLifeSecs {}, floor {}", d.half_life_secs, d.floor),
                    allowed: "halfLifeSecs > 0 and floor 0 to 1".into(),
                });
            }
        }
        if !(q.importance_weight.is_finite() && q.importance_weight >= 0.0) {
            return Err(MemoryError::OutOfRange {
                field: "importanceWeight",
                got: q.importance_weight.to_string(),
                allowed: "≥ 0".into(),
            });
        }
        self.expire(&coll)?;
        let window = f.window.max(q.limit);
        {
            let mut text = coll.text.lock().unwrap();
            if text_q.is_some() && text.has_pending() {
                text.commit()?;
            }
        }
        let st = coll.state.read().unwrap();
        let compiled = Compiled::new(&q.filter, &st.fields)?;
        let Some(part) = st.partitions.get(&scope.tenant) else {
            return Ok(QueryResponse { hits: Vec::new(), took_us: t0.elapsed().as_micros() as u64 });
        };
        let narrowed = scope.user.is_some() || scope.agent.is_some() || scope.app.is_some();
        let allowed: RoaringTreemap = if narrowed || !compiled.is_empty() {
            part.live
                .iter()
                .filter(|d| {
                    st.docs.get(d).is_some_and(|m| {
                        scope.covers(&m.scope)
                            && compiled.matches(&Fields {
                                metadata: &m.metadata,
                                created_at_ms: m.created_at_ms,
                                updated_at_ms: m.updated_at_ms,
                                expires_at_ms: m.expires_at_ms,
                                importance: m.importance,
                            })
                    })
                })
                .collect()
        } else {
            part.live.clone()
        };
        let allowed = Arc::new(allowed);
        let text_rank = match text_q {
            Some(t) => Some(Ranking {
                docs: coll.text.lock().unwrap().search(&scope.tenant, t, window, allowed.clone())?,
                higher_is_better: true,
            }),
            None => None,
        };
        let vector_rank = match (query_vector, &part.vectors) {
            (Some(v), Some(g)) => {
                let v = vectors::prepare(coll.spec.distance, v);
                Some(Ranking {
                    docs: g.search(
                        &v,
                        window,
                        q.ef.unwrap_or_else(|| default_ef(g.len())).max(window),
                        &allowed,
                        BRUTE_FORCE_BELOW,
                    ),
                    higher_is_better: false,
                })
            }
            _ => None,
        };
        let fused = fuse(&Fusion { window, ..f.clone() }, text_rank.as_ref(), vector_rank.as_ref());
        let now = now_ms();
        let mut scored: Vec<(f32, fusion::Fused, f32, f32)> = fused
            .into_iter()
            // Defence in depth: nothing outside the allowed set is ever returned.
            .filter(|x| allowed.contains(x.doc))
            .filter_map(|x| {
                let m = st.docs.get(&x.doc)?;
                let decay = fusion::decay_factor(q.decay.as_ref(), now.saturating_sub(m.updated_at_ms));
                let imp = fusion::importance_factor(q.importance_weight, m.importance);
                Some((x.score * decay * imp, x, decay, imp))
            })
            .collect();
        scored.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.doc.cmp(&b.1.doc)));
        scored.truncate(q.limit);
        drop(st);
        let mut hits = Vec::with_capacity(scored.len());
        for (score, x, decay, imp) in scored {
            let Some(record) = self.read_record(&coll, x.doc, q.include_vectors)? else { continue };
            let explain =
                q.explain.then_some(Explain { text: x.text, vector: x.vector, fused: x.score, decay, importance: imp });
            hits.push(Hit { score, record, explain });
        }
        Ok(QueryResponse { hits, took_us: t0.elapsed().as_micros() as u64 })
    }
}

fn is_operator(k: &str) -> bool {
    matches!(k, "and" | "or" | "not")
}

/// The values of a stored vector: the kept f32 values, or the int8 ones dequantised.
fn vector_values(v: &StoredVector, dim: usize) -> Option<Vec<f32>> {
    match v {
        StoredVector::None => None,
        StoredVector::Int8(b) => Quantized::from_bytes(b).map(|q| q.to_f32()),
        StoredVector::Float(b) => {
            let floats = b.get(..dim * 4)?;
            Some(floats.chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().expect("4 bytes"))).collect())
        }
    }
}

#[cfg(test)]
mod tests;
