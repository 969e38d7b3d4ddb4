//! A connected client and the runtime its futures run on.

use mongodb::error::Error as DriverError;
use mongodb::Client;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

#[derive(Debug, thiserror::Error)]
pub enum MongoError {
    #[error("cannot start the MongoDB client runtime: {0}")]
    Runtime(std::io::Error),
    #[error("connecting to {uri}: {source}")]
    Connect {
        uri: String,
        #[source]
        source: Box<DriverError>,
    },
    #[error("opening the change stream of {target}: {source}")]
    Watch {
        target: String,
        #[source]
        source: Box<DriverError>,
    },
    #[error("{0}")]
    HistoryLost(String),
    #[error("reading the stored checkpoint {id} from {collection}: {source}")]
    Checkpoint {
        id: String,
        collection: String,
        #[source]
        source: Box<DriverError>,
    },
    /// The state stored with the checkpoint cannot be read back.
    #[error(
        "the correlation state stored with checkpoint {id} in {collection} cannot be used: {reason}. To resume after \
         the checkpoint with empty correlation windows, remove it: \
         db.{collection}.updateOne({{_id: \"{id}\"}}, {{$unset: {{state: 1}}}})"
    )]
    State { id: String, collection: String, reason: String },
    /// This partition cannot start from the checkpoints stored before it.
    #[error("{0}")]
    Takeover(Box<crate::partition::TakeoverError>),
}

/// A connected client and the runtime its futures run on; cheap to clone.
#[derive(Clone)]
pub struct Connection {
    runtime: Arc<tokio::runtime::Runtime>,
    client: Client,
}

impl Connection {
    pub fn open(uri: &str) -> Result<Connection, MongoError> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("dac-mongodb")
            .enable_all()
            .build()
            .map_err(MongoError::Runtime)?;
        let client = runtime
            .block_on(Client::with_uri_str(uri))
            .map_err(|source| MongoError::Connect { uri: redact(uri), source: Box::new(source) })?;
        Ok(Connection { runtime: Arc::new(runtime), client })
    }

    /// Sets `flag` on SIGINT or SIGTERM, so a watch can end cleanly:
    /// flush its alerts and commit its position before exiting.
    pub fn stop_on_signals(&self, flag: Arc<AtomicBool>) {
        self.runtime.spawn(async move {
            use tokio::signal::unix::{signal, SignalKind};
            let (Ok(mut interrupt), Ok(mut terminate)) =
                (signal(SignalKind::interrupt()), signal(SignalKind::terminate()))
            else {
                tracing::warn!("cannot listen for SIGINT/SIGTERM; stopping will not flush");
                return;
            };
            tokio::select! {
                _ = interrupt.recv() => tracing::info!("SIGINT: finishing the current batch"),
                _ = terminate.recv() => tracing::info!("SIGTERM: finishing the current batch"),
            }
            flag.store(true, Ordering::Relaxed);
        });
    }

    pub fn client(&self) -> &Client {
        &self.client
    }

    /// Runs an action of the driver to completion.
    pub fn block_on<F: std::future::IntoFuture>(&self, action: F) -> F::Output {
        self.runtime.block_on(action.into_future())
    }
}

/// The URI without its password, for messages.
pub fn redact(uri: &str) -> String {
    match (uri.find("://"), uri.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let credentials = &uri[scheme + 3..at];
            match credentials.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &uri[..scheme + 3], &uri[at..]),
                None => uri.to_owned(),
            }
        }
        _ => uri.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_redacted_from_uris() {
        assert_eq!(
            redact("mongodb://dac:s3cret@db:27017/?replicaSet=rs0"),
            "mongodb://dac:***@db:27017/?replicaSet=rs0"
        );
        assert_eq!(redact("mongodb://db:27017"), "mongodb://db:27017");
        assert_eq!(redact("mongodb+srv://user@cluster.example.net"), "mongodb+srv://user@cluster.example.net");
    }
}
