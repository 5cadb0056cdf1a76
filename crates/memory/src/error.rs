use thiserror::Error;

/// What went wrong, said so that the caller knows what to change. `is_client_error` tells a bad
/// request from a failure of the store.
#[derive(Debug, Error)]
pub enum MemoryError {
    #[error("no scope: every memory read and write names one, at least {{\"scope\": {{\"tenant\": \"...\"}}}}")]
    MissingScope,
    #[error("bad scope value {value:?}: scope names are 1 to 256 bytes without NUL")]
    BadScope { value: String },
    #[error("no collection named {name:?}: create it with POST /v1/memory/collections")]
    UnknownCollection { name: String },
    #[error("a collection named {name:?} already exists with other settings; delete it first or pick another name")]
    CollectionExists { name: String },
    #[error("bad collection name {name:?}: use 1 to 64 letters, digits, '-', '_' or '.'")]
    BadCollectionName { name: String },
    #[error("record {id:?}: the vector has {got} values; collection {collection:?} takes {want}")]
    WrongDimension { collection: String, id: String, got: usize, want: u32 },
    #[error("record {id:?}: the vector holds NaN or infinity at index {index}")]
    NotFinite { id: String, index: usize },
    #[error("{what} is {got}, over the limit of {max}{hint}")]
    TooLarge { what: String, got: usize, max: usize, hint: &'static str },
    #[error("{field} must be {allowed} (got {got})")]
    OutOfRange { field: &'static str, got: String, allowed: String },
    #[error("bad filter: {detail}")]
    BadFilter { detail: String },
    #[error("record {id:?}: {detail}")]
    BadRecord { id: String, detail: String },
    #[error("a query needs text, a vector or both")]
    EmptyQuery,
    #[error("collection {collection:?} has no vectors (dimension 0): query it by text")]
    NoVectors { collection: String },
    #[error("no record {id:?} in this scope")]
    NotFound { id: String },
    #[error(
        "no embedding model {name:?} in {dir}; models there: {available}. Install all-MiniLM-L6-v2 with \
         scripts/models.sh, or write vectors yourself and leave embeddingModel out"
    )]
    UnknownModel { name: String, dir: String, available: String },
    #[error(
        "embedding model {model:?}: this build of Warren cannot run models; build it with `--features embed` \
         (scripts/build.sh does), or write vectors yourself and leave embeddingModel out"
    )]
    EmbeddingUnsupported { model: String },
    #[error("embedding model {model:?}: {detail}")]
    Embedding { model: String, detail: String },
    #[error("memory store: {0}")]
    Storage(String),
    #[error("memory store text index: {0}")]
    TextIndex(String),
}

impl MemoryError {
    pub fn is_client_error(&self) -> bool {
        !matches!(self, MemoryError::Storage(_) | MemoryError::TextIndex(_) | MemoryError::Embedding { .. })
    }

    pub fn is_not_found(&self) -> bool {
        matches!(self, MemoryError::UnknownCollection { .. } | MemoryError::NotFound { .. })
    }

    pub fn is_conflict(&self) -> bool {
        matches!(self, MemoryError::CollectionExists { .. })
    }
}

macro_rules! storage_from {
    ($($t:ty),*) => {$(
        impl From<$t> for MemoryError {
            fn from(e: $t) -> Self {
                MemoryError::Storage(e.to_string())
            }
        }
    )*};
}

storage_from!(
    redb::Error,
    redb::DatabaseError,
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError,
    std::io::Error
);

impl From<tantivy::TantivyError> for MemoryError {
    fn from(e: tantivy::TantivyError) -> Self {
        MemoryError::TextIndex(e.to_string())
    }
}
