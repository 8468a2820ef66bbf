//! OS images in S3 (or an S3-compatible store): upload, download, and the errors a user can act
//! on. One client builder serves every command; the sha256 travels with the object (metadata
//! `sha256` and a `KEY.sha256` object) and is checked before a download gets its final name.

pub mod client;
pub mod download;
pub mod errors;
pub mod pending;
pub mod upload;
pub mod url;

pub use client::{ChecksumMode, S3Options};
pub use url::S3Url;

/// Metadata key (`x-amz-meta-sha256`) holding the object's sha256.
pub const SHA256_METADATA: &str = "sha256";

/// A runtime for one S3 command. Stages are never spawned from it: the stage sandbox's death
/// signal follows the spawning thread, which must stay the main thread.
pub fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?)
}

/// Resolves when the process gets SIGINT (Ctrl-C) or SIGTERM, naming it: transfers stop and
/// clean up (abort the multipart upload, delete the temp file) instead of dying half-way.
pub async fn interrupt_signal() -> &'static str {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut int), Ok(mut term)) = (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) else {
        return std::future::pending().await;
    };
    tokio::select! {
        _ = int.recv() => "SIGINT",
        _ = term.recv() => "SIGTERM",
    }
}
