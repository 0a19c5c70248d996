//! The node side of the control socket: accepts connections and hands each request to the
//! node's services over a bounded channel.
//!
//! The server does no work itself: each [`ControlCall`] carries a reply channel, and whoever
//! handles it streams [`Response`] records back (progress, then one final record). A slow or
//! vanished CLI only ever blocks its own connection task.

use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{mpsc, watch};
use tracing::{debug, warn};

use super::{ControlError, Request, Response, read_record, write_record};

/// Replies queued per exchange before the handler has to wait for the CLI to read them.
const REPLY_BUFFER: usize = 16;

/// One request from the CLI and where to send the answers.
#[derive(Debug)]
pub struct ControlCall {
    /// What is asked.
    pub request: Request,
    /// Where answers go; the exchange ends with the first final [`Response`] or when dropped.
    pub reply: mpsc::Sender<Response>,
}

/// Why the control socket could not be opened.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BindError {
    /// A node already answers on this socket.
    #[error("{0}: a node is already running with this home")]
    AlreadyRunning(PathBuf),
    /// Creating or securing the socket failed.
    #[error("{path}: {source}")]
    Io {
        /// The socket path.
        path: PathBuf,
        /// The error.
        source: io::Error,
    },
}

/// A bound control socket, removed from the file system when dropped.
#[derive(Debug)]
pub struct ControlServer {
    listener: UnixListener,
    path: PathBuf,
}

impl ControlServer {
    /// Binds `path` with mode 0600, replacing a stale socket left by a crashed node.
    pub async fn bind(path: &Path) -> Result<Self, BindError> {
        let io_err = |source| BindError::Io {
            path: path.to_owned(),
            source,
        };
        if path.exists() {
            // A live node answers; a dead one left a socket nobody listens on.
            if UnixStream::connect(path).await.is_ok() {
                return Err(BindError::AlreadyRunning(path.to_owned()));
            }
            tokio::fs::remove_file(path).await.map_err(io_err)?;
        }
        let listener = UnixListener::bind(path).map_err(io_err)?;
        tokio::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
            .await
            .map_err(io_err)?;
        Ok(Self {
            listener,
            path: path.to_owned(),
        })
    }

    /// Accepts connections until `shutdown` turns true, forwarding requests to `calls`.
    pub async fn serve(
        self,
        calls: mpsc::Sender<ControlCall>,
        mut shutdown: watch::Receiver<bool>,
    ) {
        loop {
            tokio::select! {
                _ = crate::shutdown::signalled(&mut shutdown) => break,
                accepted = self.listener.accept() => match accepted {
                    Ok((stream, _)) => {
                        let calls = calls.clone();
                        let shutdown = shutdown.clone();
                        tokio::spawn(async move {
                            if let Err(err) = serve_connection(stream, calls, shutdown).await {
                                debug!(%err, "control connection ended with an error");
                            }
                        });
                    }
                    Err(err) => warn!(%err, "control socket accept failed"),
                },
            }
        }
    }
}

impl Drop for ControlServer {
    fn drop(&mut self) {
        // Best effort: a leftover socket is detected as stale by the next `bind`.
        let _ = std::fs::remove_file(&self.path);
    }
}

async fn serve_connection(
    mut stream: UnixStream,
    calls: mpsc::Sender<ControlCall>,
    mut shutdown: watch::Receiver<bool>,
) -> Result<(), ControlError> {
    loop {
        let request: Request = tokio::select! {
            _ = crate::shutdown::signalled(&mut shutdown) => return Ok(()),
            read = read_record(&mut stream) => match read {
                Ok(Some(request)) => request,
                Ok(None) => return Ok(()),
                Err(err) => {
                    // Say why before hanging up, so the CLI shows a reason, not "closed".
                    let _ = write_record(&mut stream, &Response::Error(err.to_string())).await;
                    return Err(err);
                }
            },
        };
        let (reply, mut replies) = mpsc::channel(REPLY_BUFFER);
        if calls.send(ControlCall { request, reply }).await.is_err() {
            write_record(
                &mut stream,
                &Response::Error("the node is shutting down".into()),
            )
            .await?;
            return Ok(());
        }
        let mut finished = false;
        while let Some(response) = replies.recv().await {
            let is_final = response.is_final();
            write_record(&mut stream, &response).await?;
            if is_final {
                finished = true;
                break;
            }
        }
        if !finished {
            write_record(
                &mut stream,
                &Response::Error("the node dropped the request".into()),
            )
            .await?;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;
    use crate::control::client::{ConnectError, ControlClient};
    use crate::control::{PullProgress, Request, Response};

    #[tokio::test]
    async fn socket_is_private_serves_progress_and_refuses_a_second_node() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("node.sock");
        assert!(matches!(
            ControlClient::connect(&path).await,
            Err(ConnectError::NotRunning { .. })
        ));
        // A stale socket file from a crashed node is replaced.
        drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
        let server = ControlServer::bind(&path).await.unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert!(matches!(
            ControlServer::bind(&path).await,
            Err(BindError::AlreadyRunning(_))
        ));

        let (trigger, signal) = crate::shutdown::channel();
        let (calls_tx, mut calls) = mpsc::channel(4);
        let serving = tokio::spawn(server.serve(calls_tx, signal));
        // A handler that answers Status with two progress records and then Done.
        tokio::spawn(async move {
            while let Some(call) = calls.recv().await {
                for done in [1, 2] {
                    let p = PullProgress {
                        total: 2,
                        done,
                        peers: 1,
                    };
                    call.reply.send(Response::Progress(p)).await.unwrap();
                }
                call.reply.send(Response::Done).await.unwrap();
            }
        });
        let mut client = ControlClient::connect(&path).await.unwrap();
        for _ in 0..2 {
            let mut seen = Vec::new();
            let last = client
                .call(&Request::Status, |r| seen.push(r.clone()))
                .await
                .unwrap();
            assert_eq!(last, Response::Done);
            assert_eq!(seen.len(), 2);
        }

        trigger.send(true).unwrap();
        serving.await.unwrap();
        assert!(!path.exists(), "the socket is removed on shutdown");
    }
}
