//! The postgres backend of the [`Store`](super::Store).

use super::StoreError;

/// State store on postgres.
pub struct PostgresStore {}

impl PostgresStore {
    pub async fn open(
        url: &str,
        password: Option<&secrecy::SecretString>,
    ) -> Result<Self, StoreError> {
        let _ = url;
        todo!("store helper implements this")
    }
}
