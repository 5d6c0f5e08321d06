//! The sqlite backend of the [`Store`](super::Store).

use super::StoreError;

/// State store on sqlite.
pub struct SqliteStore {}

impl SqliteStore {
    pub async fn open(url: &str) -> Result<Self, StoreError> {
        let _ = url;
        todo!("store helper implements this")
    }
}
