//! Content-defined chunking of workspace images (FastCDC), BLAKE3 manifests and the chunk store.
