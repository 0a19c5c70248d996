//! The CLI side of the control socket.

use std::io;
use std::path::Path;

use tokio::net::UnixStream;

use super::{ControlError, Request, Response, read_record, write_record};

/// A connection to a running node's control socket.
#[derive(Debug)]
pub struct ControlClient {
    stream: UnixStream,
}

/// Why the CLI could not reach the node.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConnectError {
    /// Nothing listens on the socket: the node is not running with this home.
    #[error("{path}: no node is running with this home (start one with `vwnet node run`)")]
    NotRunning {
        /// The socket path tried.
        path: String,
    },
    /// Another I/O error.
    #[error("{path}: {source}")]
    Io {
        /// The socket path tried.
        path: String,
        /// The error.
        source: io::Error,
    },
}

impl ControlClient {
    /// Connects to the socket at `path`.
    pub async fn connect(path: &Path) -> Result<Self, ConnectError> {
        match UnixStream::connect(path).await {
            Ok(stream) => Ok(Self { stream }),
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::NotFound | io::ErrorKind::ConnectionRefused
                ) =>
            {
                Err(ConnectError::NotRunning {
                    path: path.display().to_string(),
                })
            }
            Err(source) => Err(ConnectError::Io {
                path: path.display().to_string(),
                source,
            }),
        }
    }

    /// Sends `request` and returns the final answer, passing progress records to `progress`.
    pub async fn call(
        &mut self,
        request: &Request,
        mut progress: impl FnMut(&Response),
    ) -> Result<Response, ControlError> {
        write_record(&mut self.stream, request).await?;
        loop {
            match read_record::<Response, _>(&mut self.stream).await? {
                None => return Err(ControlError::Closed),
                Some(r) if r.is_final() => return Ok(r),
                Some(r) => progress(&r),
            }
        }
    }
}
