//! The full-text channel: a tantivy index per collection holding only what search needs (the
//! record's number, its tenant, its text's terms); records themselves live in the row store.
//! Each commit carries the row store's change number it reflects, so that a reopened store
//! replays what the index missed.

use std::path::Path;
use std::sync::Arc;

use roaring::RoaringTreemap;
use tantivy::collector::{FilterCollector, TopDocs};
use tantivy::query::{BooleanQuery, Occur, Query, QueryParser, TermQuery};
use tantivy::schema::{Field, IndexRecordOption, NumericOptions, Schema, TextFieldIndexing, TextOptions, STRING};
use tantivy::tokenizer::{
    Language, LowerCaser, RemoveLongFilter, SimpleTokenizer, Stemmer, StopWordFilter, TextAnalyzer,
};
use tantivy::{doc, Index, IndexReader, IndexWriter, ReloadPolicy, TantivyDocument, Term};

use crate::error::MemoryError;

const DOC: &str = "doc";
const WRITER_MEMORY: usize = 32 * 1024 * 1024;
/// The text field's analyzer: English words, lower-cased, without stop words, stemmed (a memory
/// of "deploying" answers a query for "deploy"). Stop words carry no ranking signal and made
/// long natural-language queries slow (every record holds "the"). Indexes made before it keep
/// tantivy's `en_stem` (the same without the stop words), as their schema says.
const ANALYZER: &str = "warren_en";

fn analyzer() -> TextAnalyzer {
    TextAnalyzer::builder(SimpleTokenizer::default())
        .filter(RemoveLongFilter::limit(40))
        .filter(LowerCaser)
        .filter(StopWordFilter::new(Language::English).expect("tantivy has English stop words"))
        .filter(Stemmer::new(Language::English))
        .build()
}

pub struct TextIndex {
    index: Index,
    writer: IndexWriter<TantivyDocument>,
    reader: IndexReader,
    parser: QueryParser,
    doc: Field,
    tenant: Field,
    /// Changes added but not yet committed (and so not yet searchable).
    pending: bool,
    /// The row store's change number the last commit reflects.
    committed: u64,
    /// The change number of the newest change added.
    applied: u64,
}

impl TextIndex {
    pub fn open(dir: &Path) -> Result<TextIndex, MemoryError> {
        let mut sb = Schema::builder();
        sb.add_u64_field(DOC, NumericOptions::default().set_indexed().set_fast());
        sb.add_text_field("tenant", STRING);
        let indexing = TextFieldIndexing::default()
            .set_tokenizer(ANALYZER)
            .set_index_option(IndexRecordOption::WithFreqsAndPositions);
        sb.add_text_field("text", TextOptions::default().set_indexing_options(indexing));
        let schema = sb.build();
        std::fs::create_dir_all(dir)?;
        let directory =
            tantivy::directory::MmapDirectory::open(dir).map_err(|e| MemoryError::TextIndex(e.to_string()))?;
        // An existing index keeps the schema it was made with.
        let exists = Index::exists(&directory).map_err(|e| MemoryError::TextIndex(e.to_string()))?;
        let index = if exists {
            Index::open(directory)?
        } else {
            Index::create(directory, schema, tantivy::IndexSettings::default())?
        };
        index.tokenizers().register(ANALYZER, analyzer());
        let field = |name: &str| {
            index.schema().get_field(name).map_err(|_| MemoryError::TextIndex(format!("the index has no {name} field")))
        };
        let (doc, tenant, text) = (field(DOC)?, field("tenant")?, field("text")?);
        // One indexing thread: the daemon shares two cores with its sandboxes.
        let writer = index.writer_with_num_threads(1, WRITER_MEMORY)?;
        let reader = index.reader_builder().reload_policy(ReloadPolicy::Manual).try_into()?;
        // Words are or-ed (BM25 ranks records holding more of them first).
        let parser = QueryParser::for_index(&index, vec![text]);
        let committed = index.load_metas()?.payload.and_then(|p| p.parse().ok()).unwrap_or(0);
        Ok(TextIndex { index, writer, reader, parser, doc, tenant, pending: false, committed, applied: committed })
    }

    /// The row store's change number this index reflects on disk.
    pub fn committed(&self) -> u64 {
        self.committed
    }

    /// Indexes `doc` (replacing what it had) as of change `seq`; `None` removes it.
    pub fn put(&mut self, doc: u64, tenant: &str, text: Option<&str>, seq: u64) -> Result<(), MemoryError> {
        self.writer.delete_term(Term::from_field_u64(self.doc, doc));
        if let Some(t) = text {
            let text_field = self.index.schema().get_field("text").expect("schema has text");
            self.writer.add_document(doc!(self.doc => doc, self.tenant => tenant, text_field => t))?;
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

    /// Never committed and holding nothing: made just now (new, or its files were lost).
    pub fn is_blank(&self) -> bool {
        self.committed == 0 && !self.pending && self.reader.searcher().num_docs() == 0
    }

    pub fn has_pending(&self) -> bool {
        self.pending
    }

    /// The best `limit` records of `tenant` for `query` among `allowed`, BM25 score first. The
    /// allowed set is checked inside the collector, before ranking: a filter never empties a
    /// result that has matching records further down.
    pub fn search(
        &self,
        tenant: &str,
        query: &str,
        limit: usize,
        allowed: Arc<RoaringTreemap>,
    ) -> Result<Vec<(u64, f32)>, MemoryError> {
        let (parsed, _ignored) = self.parser.parse_query_lenient(query);
        // Only stop words (or nothing searchable): no match, rather than tantivy's empty query,
        // which would match every record of the tenant.
        let mut terms = 0;
        parsed.query_terms(&mut |_, _| terms += 1);
        if terms == 0 {
            return Ok(Vec::new());
        }
        let q = BooleanQuery::new(vec![
            (
                Occur::Must,
                Box::new(TermQuery::new(Term::from_field_text(self.tenant, tenant), IndexRecordOption::Basic))
                    as Box<dyn Query>,
            ),
            (Occur::Must, parsed),
        ]);
        let searcher = self.reader.searcher();
        let collector = FilterCollector::new(
            DOC.to_string(),
            move |d: u64| allowed.contains(d),
            TopDocs::with_limit(limit.max(1)).order_by_score(),
        );
        let top = searcher.search(&q, &collector)?;
        let mut out = Vec::with_capacity(top.len());
        for (score, addr) in top {
            let column = searcher.segment_reader(addr.segment_ord).fast_fields().u64(DOC)?;
            if let Some(d) = column.first(addr.doc_id) {
                out.push((d, score));
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all() -> Arc<RoaringTreemap> {
        Arc::new((0..10).collect())
    }

    #[test]
    fn stop_words_are_left_out_and_older_indexes_keep_their_analyzer() {
        let dir = tempfile::tempdir().unwrap();
        let mut t = TextIndex::open(dir.path()).unwrap();
        t.put(1, "a", Some("the cat and the hat"), 1).unwrap();
        t.put(2, "a", Some("deploying the service"), 2).unwrap();
        t.commit().unwrap();
        assert!(t.search("a", "the and", 10, all()).unwrap().is_empty(), "stop words match nothing");
        assert_eq!(t.search("a", "the deploy", 10, all()).unwrap()[0].0, 2);

        // An index made before the analyzer (tantivy's en_stem) opens with its own schema.
        let old = tempfile::tempdir().unwrap();
        {
            let mut sb = Schema::builder();
            sb.add_u64_field(DOC, NumericOptions::default().set_indexed().set_fast());
            sb.add_text_field("tenant", STRING);
            let indexing = TextFieldIndexing::default()
                .set_tokenizer("en_stem")
                .set_index_option(IndexRecordOption::WithFreqsAndPositions);
            sb.add_text_field("text", TextOptions::default().set_indexing_options(indexing));
            Index::create_in_dir(old.path(), sb.build()).unwrap();
        }
        let mut t = TextIndex::open(old.path()).unwrap();
        t.put(3, "a", Some("the deploying service"), 1).unwrap();
        t.commit().unwrap();
        assert_eq!(t.search("a", "deploy", 10, all()).unwrap()[0].0, 3);
        assert_eq!(t.search("a", "the", 10, all()).unwrap()[0].0, 3, "en_stem keeps stop words");
    }
}
