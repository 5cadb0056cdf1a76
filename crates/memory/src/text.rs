//! The full-text channel: a tantivy index per collection holding only what search needs (the
//! record's number and its text's terms); records themselves live in the row store. Each commit
//! carries the row store's change number it reflects, so that a reopened store replays what the
//! index missed.
//!
//! Every term is the tenant's name and a word (`tenant \0 word`), so one tenant's posting lists
//! hold only its own records and a query never reads another tenant's: the partition is in the
//! index, not a clause a query adds. It also makes a query a plain union of terms, which tantivy
//! answers with block-max WAND (skipping blocks that cannot reach the top k) — a tenant clause
//! or a filtering collector wrapped around the union turns that off and reads every posting.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::path::Path;
use std::sync::Arc;

use roaring::RoaringTreemap;
use tantivy::query::{BooleanQuery, EnableScoring, Occur, Query, TermQuery};
use tantivy::schema::{Field, IndexRecordOption, NumericOptions, Schema, TextFieldIndexing, TextOptions};
use tantivy::tokenizer::{
    Language, LowerCaser, PreTokenizedString, RemoveLongFilter, SimpleTokenizer, Stemmer, StopWordFilter, TextAnalyzer,
    Token,
};
use tantivy::{Index, IndexReader, IndexWriter, ReloadPolicy, TantivyDocument, Term};

use crate::error::MemoryError;

const DOC: &str = "doc";
/// The text field. Indexes from before tenant-prefixed terms called it `text` and had a `tenant`
/// field; they are rebuilt from the rows on open.
const TERMS: &str = "terms";
const WRITER_MEMORY: usize = 32 * 1024 * 1024;
/// Between a term's tenant and its word: words are letters and digits only, so the last NUL of a
/// term always ends the tenant, whatever the tenant's name holds.
const SEP: char = '\0';

/// English words, lower-cased, without stop words, stemmed (a memory of "deploying" answers a
/// query for "deploy"). Stop words carry no ranking signal and made long natural-language
/// queries slow (every record holds "the").
fn analyzer() -> TextAnalyzer {
    TextAnalyzer::builder(SimpleTokenizer::default())
        .filter(RemoveLongFilter::limit(40))
        .filter(LowerCaser)
        .filter(StopWordFilter::new(Language::English).expect("tantivy has English stop words"))
        .filter(Stemmer::new(Language::English))
        .build()
}

/// `text`'s words as the index holds them for `tenant`, in order, with their positions.
fn tenant_tokens(analyzer: &mut TextAnalyzer, tenant: &str, text: &str) -> Vec<Token> {
    let mut out = Vec::new();
    let mut stream = analyzer.token_stream(text);
    while let Some(t) = stream.next() {
        let mut term = String::with_capacity(tenant.len() + 1 + t.text.len());
        term.push_str(tenant);
        term.push(SEP);
        term.push_str(&t.text);
        out.push(Token { text: term, ..t.clone() });
    }
    out
}

/// A scored record, ordered by score then by record number (the lower first on ties).
#[derive(PartialEq)]
struct Hit(f32, u64);

impl Eq for Hit {}

impl Ord for Hit {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.0.total_cmp(&other.0).then(other.1.cmp(&self.1))
    }
}

impl PartialOrd for Hit {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

pub struct TextIndex {
    writer: IndexWriter<TantivyDocument>,
    reader: IndexReader,
    analyzer: TextAnalyzer,
    doc: Field,
    terms: Field,
    /// Changes added but not yet committed (and so not yet searchable).
    pending: bool,
    /// The row store's change number the last commit reflects.
    committed: u64,
    /// The change number of the newest change added.
    applied: u64,
}

impl TextIndex {
    pub fn open(dir: &Path) -> Result<TextIndex, MemoryError> {
        let index = match Self::open_index(dir)? {
            Some(index) => index,
            None => {
                // An index of an older layout: derived data, so it is rebuilt from the rows
                // (the caller sees a blank index).
                std::fs::remove_dir_all(dir)?;
                Self::open_index(dir)?.ok_or_else(|| MemoryError::TextIndex("a new index has the old layout".into()))?
            }
        };
        let field = |name: &str| {
            index.schema().get_field(name).map_err(|_| MemoryError::TextIndex(format!("the index has no {name} field")))
        };
        let (doc, terms) = (field(DOC)?, field(TERMS)?);
        // One indexing thread: the daemon shares two cores with its sandboxes.
        let writer = index.writer_with_num_threads(1, WRITER_MEMORY)?;
        let reader = index.reader_builder().reload_policy(ReloadPolicy::Manual).try_into()?;
        let committed = index.load_metas()?.payload.and_then(|p| p.parse().ok()).unwrap_or(0);
        Ok(TextIndex {
            writer,
            reader,
            analyzer: analyzer(),
            doc,
            terms,
            pending: false,
            committed,
            applied: committed,
        })
    }

    /// The index in `dir`, made if there is none; `None` if the one there has an older layout.
    fn open_index(dir: &Path) -> Result<Option<Index>, MemoryError> {
        std::fs::create_dir_all(dir)?;
        let directory =
            tantivy::directory::MmapDirectory::open(dir).map_err(|e| MemoryError::TextIndex(e.to_string()))?;
        if Index::exists(&directory).map_err(|e| MemoryError::TextIndex(e.to_string()))? {
            let index = Index::open(directory)?;
            return Ok(index.schema().get_field(TERMS).is_ok().then_some(index));
        }
        let mut sb = Schema::builder();
        sb.add_u64_field(DOC, NumericOptions::default().set_indexed().set_fast());
        // Frequencies for BM25; no positions, as queries are bags of words.
        let indexing = TextFieldIndexing::default().set_tokenizer("raw").set_index_option(IndexRecordOption::WithFreqs);
        sb.add_text_field(TERMS, TextOptions::default().set_indexing_options(indexing));
        Ok(Some(Index::create(directory, sb.build(), tantivy::IndexSettings::default())?))
    }

    /// The row store's change number this index reflects on disk.
    pub fn committed(&self) -> u64 {
        self.committed
    }

    /// Indexes `doc` (replacing what it had) as of change `seq`; `None` removes it.
    pub fn put(&mut self, doc: u64, tenant: &str, text: Option<&str>, seq: u64) -> Result<(), MemoryError> {
        self.writer.delete_term(Term::from_field_u64(self.doc, doc));
        if let Some(t) = text {
            let mut d = TantivyDocument::default();
            d.add_u64(self.doc, doc);
            let tokens = tenant_tokens(&mut self.analyzer, tenant, t);
            d.add_pre_tokenized_text(self.terms, PreTokenizedString { text: String::new(), tokens });
            self.writer.add_document(d)?;
        }
        self.pending = true;
        self.applied = self.applied.max(seq);
        Ok(())
    }

    /// Makes added changes searchable and durable, recording the change number they reach.
    pub fn commit(&mut self) -> Result<(), MemoryError> {
        if !self.pending {
            return Ok(());
        }
        let mut prepared = self.writer.prepare_commit()?;
        prepared.set_payload(&self.applied.to_string());
        prepared.commit()?;
        self.reader.reload()?;
        self.pending = false;
        self.committed = self.applied;
        Ok(())
    }

    /// Never committed and holding nothing: made just now (new, its files lost, or rebuilt).
    pub fn is_blank(&self) -> bool {
        self.committed == 0 && !self.pending && self.reader.searcher().num_docs() == 0
    }

    pub fn has_pending(&self) -> bool {
        self.pending
    }

    /// The best `limit` records of `tenant` for `query` among `allowed`, BM25 score first. Words
    /// are or-ed (records holding more of them rank first). The allowed set is checked as
    /// records are scored, before ranking, so a filter never empties a result that has matching
    /// records further down, and the pruning bound is the k-th best *allowed* score.
    pub fn search(
        &self,
        tenant: &str,
        query: &str,
        limit: usize,
        allowed: Arc<RoaringTreemap>,
    ) -> Result<Vec<(u64, f32)>, MemoryError> {
        let mut analyzer = self.analyzer.clone();
        let mut words: Vec<String> = tenant_tokens(&mut analyzer, tenant, query).into_iter().map(|t| t.text).collect();
        words.sort_unstable();
        words.dedup();
        // Only stop words (or nothing searchable): no match.
        if words.is_empty() {
            return Ok(Vec::new());
        }
        let term = |w: &String| TermQuery::new(Term::from_field_text(self.terms, w), IndexRecordOption::WithFreqs);
        let query: Box<dyn Query> = match words.as_slice() {
            [one] => Box::new(term(one)),
            many => Box::new(BooleanQuery::new(
                many.iter().map(|w| (Occur::Should, Box::new(term(w)) as Box<dyn Query>)).collect(),
            )),
        };
        let searcher = self.reader.searcher();
        let weight = query.weight(EnableScoring::enabled_from_searcher(&searcher))?;
        let limit = limit.max(1);
        // The worst of the best `limit` allowed records so far at the top.
        let mut top: BinaryHeap<Reverse<Hit>> = BinaryHeap::with_capacity(limit + 1);
        let mut threshold = f32::MIN;
        for segment in searcher.segment_readers() {
            let numbers = segment.fast_fields().u64(DOC)?;
            let alive = segment.alive_bitset();
            weight.for_each_pruning(threshold, segment, &mut |d, score| {
                if alive.is_some_and(|a| a.is_deleted(d)) {
                    return threshold;
                }
                let Some(doc) = numbers.first(d) else { return threshold };
                if !allowed.contains(doc) {
                    return threshold;
                }
                top.push(Reverse(Hit(score, doc)));
                if top.len() > limit {
                    top.pop();
                }
                if top.len() == limit {
                    threshold = top.peek().map_or(f32::MIN, |w| w.0 .0);
                }
                threshold
            })?;
        }
        let mut out: Vec<(u64, f32)> = top.into_iter().map(|Reverse(Hit(s, d))| (d, s)).collect();
        out.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use tantivy::schema::STRING;

    use super::*;

    fn all(n: u64) -> Arc<RoaringTreemap> {
        Arc::new((0..n).collect())
    }

    #[test]
    fn stop_words_are_left_out_and_words_are_stemmed() {
        let dir = tempfile::tempdir().unwrap();
        let mut t = TextIndex::open(dir.path()).unwrap();
        t.put(1, "a", Some("the cat and the hat"), 1).unwrap();
        t.put(2, "a", Some("deploying the service"), 2).unwrap();
        t.commit().unwrap();
        assert!(t.search("a", "the and", 10, all(10)).unwrap().is_empty(), "stop words match nothing");
        assert_eq!(t.search("a", "the deploy", 10, all(10)).unwrap()[0].0, 2);
        assert!(t.search("a", "", 10, all(10)).unwrap().is_empty());
    }

    #[test]
    fn a_tenant_never_reads_another_tenants_records() {
        let dir = tempfile::tempdir().unwrap();
        let mut t = TextIndex::open(dir.path()).unwrap();
        t.put(1, "a", Some("secret launch codes"), 1).unwrap();
        t.put(2, "b", Some("secret launch codes"), 2).unwrap();
        // A tenant whose name ends like another's terms begin.
        t.put(3, "a\0secret", Some("launch"), 3).unwrap();
        t.commit().unwrap();
        // Even with every record allowed, the terms themselves keep tenants apart.
        let hits: Vec<u64> = t.search("a", "secret launch", 10, all(10)).unwrap().iter().map(|h| h.0).collect();
        assert_eq!(hits, vec![1]);
        let hits: Vec<u64> = t.search("b", "launch", 10, all(10)).unwrap().iter().map(|h| h.0).collect();
        assert_eq!(hits, vec![2]);
        assert!(t.search("c", "launch", 10, all(10)).unwrap().is_empty());
    }

    #[test]
    fn pruned_top_k_with_a_filter_equals_the_full_ranking_filtered() {
        let dir = tempfile::tempdir().unwrap();
        let mut t = TextIndex::open(dir.path()).unwrap();
        let words = ["alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf"];
        let mut seed = 7u64;
        for d in 0..3000u64 {
            let mut text = String::new();
            for _ in 0..(3 + d % 9) {
                seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                text.push_str(words[(seed >> 33) as usize % words.len()]);
                text.push(' ');
            }
            t.put(d, "t", Some(&text), d + 1).unwrap();
            // Several segments, so the bound carries from one to the next.
            if d % 1000 == 999 {
                t.commit().unwrap();
            }
        }
        t.put(5, "t", None, 4000).unwrap();
        t.commit().unwrap();
        let everything = t.search("t", "alpha golf echo", 3000, all(3000)).unwrap();
        assert!(everything.iter().all(|h| h.0 != 5), "a removed record is not found");
        // Leave out the best hundred: the ten that follow must still come back.
        let allowed: RoaringTreemap = (0..3000).filter(|d| !everything[..100].iter().any(|h| h.0 == *d)).collect();
        let top = t.search("t", "alpha golf echo", 10, Arc::new(allowed.clone())).unwrap();
        let expect: Vec<(u64, f32)> = everything.iter().filter(|h| allowed.contains(h.0)).take(10).cloned().collect();
        assert_eq!(top, expect);
        assert_eq!(t.search("t", "alpha golf echo", 10, all(3000)).unwrap(), everything[..10].to_vec());
    }

    #[test]
    fn an_index_of_the_older_layout_is_rebuilt() {
        let old = tempfile::tempdir().unwrap();
        {
            let mut sb = Schema::builder();
            sb.add_u64_field(DOC, NumericOptions::default().set_indexed().set_fast());
            sb.add_text_field("tenant", STRING);
            sb.add_text_field("text", STRING);
            let index = Index::create_in_dir(old.path(), sb.build()).unwrap();
            let mut w: IndexWriter<TantivyDocument> = index.writer_with_num_threads(1, WRITER_MEMORY).unwrap();
            let text = index.schema().get_field("text").unwrap();
            let mut d = TantivyDocument::default();
            d.add_text(text, "launch");
            w.add_document(d).unwrap();
            w.commit().unwrap();
        }
        let mut t = TextIndex::open(old.path()).unwrap();
        assert!(t.is_blank(), "the caller rebuilds it from the rows");
        t.put(3, "a", Some("launch"), 1).unwrap();
        t.commit().unwrap();
        assert_eq!(t.search("a", "launch", 10, all(10)).unwrap()[0].0, 3);
    }
}
