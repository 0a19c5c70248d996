//! The chunk store as an actor: async callers, blocking work on the blocking pool.
//!
//! [`vwnet_chunker::Store`] is synchronous (redb transactions, pack-file reads with fsync,
//! BLAKE3 hashing). Running it on a runtime worker would stall the swarm, so every operation is
//! sent over a bounded channel to one actor task, which runs it with `spawn_blocking` while at
//! most [`MAX_PARALLEL_JOBS`] jobs are in flight. The bounded channel is the back-pressure: a
//! flood of inbound chunk requests waits for room instead of queueing without limit.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::{Semaphore, mpsc, oneshot};
use vwnet_chunker::store::{ChunkWriter, ImageInfo, PutError, ReadError, VerifiedChunk};
use vwnet_chunker::{
    ExportError, ExportReport, IngestError, IngestOptions, IngestReport, Manifest, Store,
    StoreError,
};
use vwnet_protocol::ids::{ChunkHash, ImageId};

/// Jobs waiting for the actor before callers wait for room.
const JOB_BUFFER: usize = 64;
/// Jobs running on the blocking pool at once; the machine has few cores and one disk.
pub const MAX_PARALLEL_JOBS: usize = 4;

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreActorError {
    /// The actor has stopped (the node is shutting down).
    #[error("the store has stopped")]
    Stopped,
    /// A store operation failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Storing a chunk failed (including a hash mismatch).
    #[error(transparent)]
    Put(#[from] PutError),
    /// Reading a chunk failed.
    #[error(transparent)]
    Read(#[from] ReadError),
    /// Ingesting an image failed.
    #[error(transparent)]
    Ingest(#[from] IngestError),
    /// Exporting an image failed.
    #[error(transparent)]
    Export(#[from] ExportError),
    /// A manifest's bytes are invalid or do not hash to the expected id.
    #[error("manifest: {0}")]
    Manifest(String),
    /// A blocking store task panicked or was cancelled.
    #[error("a store task failed: {0}")]
    Task(String),
}

/// The verdict on one chunk received from a peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChunkVerdict {
    /// Hashed, matched and stored (or already present).
    Stored,
    /// The bytes do not hash to the requested hash: the sender lied or was corrupted.
    Corrupt,
}

type Reply<T> = oneshot::Sender<Result<T, StoreActorError>>;

enum Job {
    Ingest(PathBuf, Reply<IngestReport>),
    ReadChunks(Vec<ChunkHash>, Reply<Vec<Option<Vec<u8>>>>),
    HasChunks(Vec<ChunkHash>, Reply<Vec<bool>>),
    AddManifest(ImageId, Vec<u8>, Reply<Manifest>),
    Manifest(ImageId, Reply<Option<Manifest>>),
    Missing(ImageId, Reply<Vec<ChunkHash>>),
    Images(Reply<Vec<ImageInfo>>),
    Export(ImageId, PathBuf, Reply<ExportReport>),
    Finish(ImageId, Reply<ImageInfo>),
}

impl Job {
    fn run(self, store: &Store) {
        // A dropped receiver means the caller gave up; the result is simply discarded.
        match self {
            Job::Ingest(path, reply) => {
                let opts = IngestOptions {
                    // The node shares the machine with its swarm; leave a core for it.
                    threads: std::thread::available_parallelism()
                        .map_or(1, |n| n.get().saturating_sub(1).max(1)),
                    ..IngestOptions::default()
                };
                let r = store.ingest_file(&path, &opts, &mut |_, _| {});
                let _ = reply.send(r.map_err(Into::into));
            }
            Job::ReadChunks(hashes, reply) => {
                // A corrupt local chunk is quarantined and comes back as `None`: we simply do
                // not have it now.
                let _ = reply.send(store.read_chunks(&hashes).map_err(Into::into));
            }
            Job::HasChunks(hashes, reply) => {
                let r = hashes
                    .iter()
                    .map(|h| store.has_chunk(h).map_err(Into::into))
                    .collect();
                let _ = reply.send(r);
            }
            Job::AddManifest(id, bytes, reply) => {
                let _ = reply.send(add_manifest(store, id, &bytes));
            }
            Job::Manifest(id, reply) => {
                let r = match store.manifest(&id) {
                    Ok(m) => Ok(Some(m)),
                    Err(StoreError::UnknownImage(_)) => Ok(None),
                    Err(e) => Err(e.into()),
                };
                let _ = reply.send(r);
            }
            Job::Missing(id, reply) => {
                let r = store
                    .manifest(&id)
                    .and_then(|m| store.missing(&m))
                    .map_err(Into::into);
                let _ = reply.send(r);
            }
            Job::Images(reply) => {
                let _ = reply.send(store.images().map_err(Into::into));
            }
            Job::Finish(id, reply) => {
                let r = store.manifest(&id).and_then(|m| {
                    // Re-recording refreshes the `complete` flag; pinning keeps gc away.
                    store.add_manifest(&m)?;
                    store.set_pinned(&id, true)?;
                    store.image(&id)
                });
                let _ = reply.send(r.map_err(Into::into));
            }
            Job::Export(id, path, reply) => {
                let r = store.export(&id, &path, &mut |_, _| {});
                let _ = reply.send(r.map_err(Into::into));
            }
        }
    }
}

fn add_manifest(store: &Store, id: ImageId, bytes: &[u8]) -> Result<Manifest, StoreActorError> {
    let manifest =
        Manifest::from_bytes(bytes).map_err(|e| StoreActorError::Manifest(e.to_string()))?;
    if manifest.id() != id {
        return Err(StoreActorError::Manifest(format!(
            "hashes to {}, not the {} the description names",
            manifest.id().short(),
            id.short()
        )));
    }
    store.add_manifest(&manifest)?;
    Ok(manifest)
}

/// A cloneable handle to the store actor.
#[derive(Debug, Clone)]
pub struct StoreHandle {
    jobs: mpsc::Sender<Job>,
    store: Store,
}

impl std::fmt::Debug for Job {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Job")
    }
}

impl StoreHandle {
    /// Starts the actor for `store` on the current runtime.
    pub fn spawn(store: Store) -> Self {
        let (jobs, mut rx) = mpsc::channel::<Job>(JOB_BUFFER);
        let permits = Arc::new(Semaphore::new(MAX_PARALLEL_JOBS));
        let actor_store = store.clone();
        tokio::spawn(async move {
            let store = actor_store;
            while let Some(job) = rx.recv().await {
                let Ok(permit) = permits.clone().acquire_owned().await else {
                    break;
                };
                let store = store.clone();
                tokio::task::spawn_blocking(move || {
                    job.run(&store);
                    drop(permit);
                });
            }
        });
        Self { jobs, store }
    }

    /// Starts a [`WriteSession`] for chunks that will arrive over time.
    pub fn write_session<T: Send + 'static>(&self) -> WriteSession<T> {
        WriteSession {
            state: Arc::new(Mutex::new(SessionState {
                writer: self.store.writer(),
                tags: Vec::new(),
            })),
            uncommitted: Arc::new(AtomicU64::new(0)),
        }
    }

    async fn ask<T>(&self, make: impl FnOnce(Reply<T>) -> Job) -> Result<T, StoreActorError> {
        let (tx, rx) = oneshot::channel();
        self.jobs
            .send(make(tx))
            .await
            .map_err(|_| StoreActorError::Stopped)?;
        rx.await.map_err(|_| StoreActorError::Stopped)?
    }

    /// Chunks the image file at `path` into the store and pins it.
    pub async fn ingest(&self, path: PathBuf) -> Result<IngestReport, StoreActorError> {
        self.ask(|r| Job::Ingest(path, r)).await
    }

    /// Reads chunks (verified on read); `None` for chunks not held.
    pub async fn read_chunks(
        &self,
        hashes: Vec<ChunkHash>,
    ) -> Result<Vec<Option<Vec<u8>>>, StoreActorError> {
        self.ask(|r| Job::ReadChunks(hashes, r)).await
    }

    /// Which of `hashes` are held.
    pub async fn has_chunks(&self, hashes: Vec<ChunkHash>) -> Result<Vec<bool>, StoreActorError> {
        self.ask(|r| Job::HasChunks(hashes, r)).await
    }

    /// Verifies that `bytes` are a valid manifest hashing to `id`, and records it.
    pub async fn add_manifest(
        &self,
        id: ImageId,
        bytes: Vec<u8>,
    ) -> Result<Manifest, StoreActorError> {
        self.ask(|r| Job::AddManifest(id, bytes, r)).await
    }

    /// The manifest of `id`, if known.
    pub async fn manifest(&self, id: ImageId) -> Result<Option<Manifest>, StoreActorError> {
        self.ask(|r| Job::Manifest(id, r)).await
    }

    /// The chunks of image `id` not yet held.
    pub async fn missing(&self, id: ImageId) -> Result<Vec<ChunkHash>, StoreActorError> {
        self.ask(|r| Job::Missing(id, r)).await
    }

    /// Every known image.
    pub async fn images(&self) -> Result<Vec<ImageInfo>, StoreActorError> {
        self.ask(Job::Images).await
    }

    /// Marks a pulled image as finished: refreshes its completeness and pins it.
    pub async fn finish(&self, id: ImageId) -> Result<ImageInfo, StoreActorError> {
        self.ask(|r| Job::Finish(id, r)).await
    }

    /// Writes image `id` to `path`.
    pub async fn export(
        &self,
        id: ImageId,
        path: PathBuf,
    ) -> Result<ExportReport, StoreActorError> {
        self.ask(|r| Job::Export(id, path, r)).await
    }
}

/// A write session for chunks that arrive over time from the network (a pull).
///
/// Many tasks hand in chunks concurrently with [`put`](WriteSession::put): each batch is hashed
/// on the blocking pool (in parallel with other batches) and only the chunks that match their
/// claimed hash are appended to one shared pack writer. Durability is batched: the caller calls
/// [`commit`](WriteSession::commit) every so often (by bytes or time), which fsyncs and indexes
/// everything appended so far in one transaction while appends go on. Until then appended
/// chunks are neither visible in the store nor reported as durable: `commit` returns the tags
/// of exactly the chunks it made durable, each chunk once (a second copy of a chunk is not
/// new), so callers announce and count only what survives a crash.
pub struct WriteSession<T> {
    state: Arc<Mutex<SessionState<T>>>,
    uncommitted: Arc<AtomicU64>,
}

struct SessionState<T> {
    writer: ChunkWriter,
    /// Tags of the new chunks appended since the last seal.
    tags: Vec<T>,
}

impl<T> Clone for WriteSession<T> {
    fn clone(&self) -> Self {
        Self {
            state: self.state.clone(),
            uncommitted: self.uncommitted.clone(),
        }
    }
}

impl<T> std::fmt::Debug for WriteSession<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WriteSession")
            .field("uncommitted", &self.uncommitted.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // The state is a writer and a list; a panic while holding it is a bug that the next
    // commit's error (or the lost tags) makes visible, not a reason to stop every writer.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

async fn blocking<R: Send + 'static>(
    f: impl FnOnce() -> Result<R, StoreActorError> + Send + 'static,
) -> Result<R, StoreActorError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| StoreActorError::Task(e.to_string()))?
}

impl<T: Send + 'static> WriteSession<T> {
    /// Hashes each chunk against its claimed hash and appends those that match (unless already
    /// stored); one verdict per chunk, in order. A chunk that was new is tagged for the commit
    /// that makes it durable.
    pub async fn put(
        &self,
        chunks: Vec<(ChunkHash, Vec<u8>, T)>,
    ) -> Result<Vec<ChunkVerdict>, StoreActorError> {
        let state = self.state.clone();
        let uncommitted = self.uncommitted.clone();
        blocking(move || {
            let mut verdicts = Vec::with_capacity(chunks.len());
            let mut good = Vec::with_capacity(chunks.len());
            for (hash, bytes, tag) in chunks {
                match VerifiedChunk::verify(hash, bytes) {
                    Ok(chunk) => {
                        verdicts.push(ChunkVerdict::Stored);
                        good.push((chunk, tag));
                    }
                    Err(_) => verdicts.push(ChunkVerdict::Corrupt),
                }
            }
            let mut st = lock(&state);
            for (chunk, tag) in good {
                if st.writer.put(&chunk)? {
                    st.tags.push(tag);
                }
            }
            uncommitted.store(st.writer.uncommitted_bytes(), Ordering::Relaxed);
            Ok(verdicts)
        })
        .await
    }

    /// Bytes appended and not yet handed to a commit.
    pub fn uncommitted_bytes(&self) -> u64 {
        self.uncommitted.load(Ordering::Relaxed)
    }

    /// Makes every chunk appended so far durable and visible; returns their tags. Appends may
    /// continue meanwhile (they go to the next commit).
    pub async fn commit(&self) -> Result<Vec<T>, StoreActorError> {
        let state = self.state.clone();
        let uncommitted = self.uncommitted.clone();
        blocking(move || {
            let (batch, tags) = {
                let mut st = lock(&state);
                let batch = st.writer.seal()?;
                uncommitted.store(0, Ordering::Relaxed);
                (batch, std::mem::take(&mut st.tags))
            };
            batch.commit()?;
            Ok(tags)
        })
        .await
    }
}
