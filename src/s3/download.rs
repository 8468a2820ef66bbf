//! `download-os-image`: parallel ranged GETs (each conditional on the object's ETag, so a
//! concurrent overwrite cannot mix two versions) streamed into a temp file in the target
//! directory; the sha256 is checked against the object's metadata (or its `KEY.sha256` object)
//! before the file gets its final name, with the local `.sha256` sidecar beside it.

use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use futures::stream::{self, StreamExt, TryStreamExt};

use super::client::{self, S3Client};
use super::errors::{explain, Target};
use super::{S3Options, S3Url, SHA256_METADATA};
use crate::output::PendingOutput;
use crate::progress::Reporter;

#[derive(Debug, Clone)]
pub struct DownloadPlan {
    pub url: S3Url,
    pub file: PathBuf,
    pub options: S3Options,
    /// Skip the download when the local file already has the remote digest.
    pub if_changed: bool,
    /// Accept an object that carries no sha256 (uploaded by another tool).
    pub no_verify: bool,
    pub range_size: u64,
    pub concurrency: usize,
}

impl DownloadPlan {
    pub fn new(url: S3Url, file: PathBuf, options: S3Options) -> Self {
        Self {
            url,
            file,
            options,
            if_changed: false,
            no_verify: false,
            range_size: 16 << 20,
            concurrency: 4,
        }
    }
}

#[derive(Debug, PartialEq, Eq)]
pub enum Downloaded {
    Fetched { digest: Option<String>, bytes: u64 },
    UpToDate { digest: String },
}

pub fn download(plan: &DownloadPlan, reporter: &Reporter) -> Result<Downloaded> {
    let runtime = super::runtime()?;
    runtime.block_on(download_async(plan, reporter))
}

fn target(s3: &S3Client) -> Target<'_> {
    Target {
        endpoint: s3.endpoint.as_deref(),
        region: &s3.region,
    }
}

async fn download_async(plan: &DownloadPlan, reporter: &Reporter) -> Result<Downloaded> {
    let s3 = client::build(&plan.options).await;
    let url = &plan.url;
    let head = match s3
        .client
        .head_object()
        .bucket(&url.bucket)
        .key(&url.key)
        .send()
        .await
    {
        Ok(head) => head,
        Err(err) => {
            // A HEAD response has no body, so no error code: a 404 does not say whether the
            // bucket or the key is missing, a 403 not whether the credentials are wrong. A GET
            // of one byte answers with the code.
            let status = err.raw_response().map(|r| r.status().as_u16());
            if status == Some(404) && !bucket_exists(&s3, &url.bucket).await {
                bail!(super::errors::message(
                    &super::errors::S3Failure::NoSuchBucket,
                    url,
                    "downloading",
                    &target(&s3)
                ));
            }
            if status == Some(403) {
                if let Err(get_err) = s3
                    .client
                    .get_object()
                    .bucket(&url.bucket)
                    .key(&url.key)
                    .range("bytes=0-0")
                    .send()
                    .await
                {
                    return Err(explain(&get_err, url, "downloading", &target(&s3)));
                }
            }
            return Err(explain(&err, url, "downloading", &target(&s3)));
        }
    };
    let len = head.content_length().unwrap_or(0).max(0) as u64;
    let etag = head.e_tag().map(str::to_string);
    let remote_digest = match head.metadata().and_then(|m| m.get(SHA256_METADATA)) {
        Some(digest) => Some(digest.to_ascii_lowercase()),
        None => sidecar_digest(&s3, url).await?,
    };
    if remote_digest.is_none() && !plan.no_verify {
        bail!(
            "downloading {url}: the object carries no sha256 (no x-amz-meta-sha256, no {}): upload it with upload-os-image, or pass --no-verify",
            url.sidecar()
        );
    }
    if let (true, Some(digest)) = (plan.if_changed, &remote_digest) {
        if plan.file.is_file() && &crate::checksum::sha256_file(&plan.file)? == digest {
            reporter.info(&format!(
                "{} is up to date with {url} ({digest})",
                plan.file.display()
            ));
            write_sidecar(&plan.file, digest)?;
            return Ok(Downloaded::UpToDate {
                digest: digest.clone(),
            });
        }
    }

    let pending = PendingOutput::new(&plan.file)?;
    let file = Arc::new(pending.file()?);
    file.set_len(len)
        .map_err(|e| crate::fsutil::io_error(e, "allocating", &plan.file))?;
    let bar = reporter.bytes(&format!("download {url}"), len);
    let started = Instant::now();
    let done = Arc::new(AtomicU64::new(0));
    let ranges: Vec<(u64, u64)> = (0..len.div_ceil(plan.range_size.max(1)))
        .map(|i| {
            (
                i * plan.range_size,
                ((i + 1) * plan.range_size).min(len) - 1,
            )
        })
        .collect();
    let fetch = stream::iter(ranges)
        .map(|(first, last)| {
            let (file, done, etag, s3, bar) = (file.clone(), done.clone(), etag.clone(), &s3, &bar);
            async move {
                let mut request = s3.client.get_object().bucket(&url.bucket).key(&url.key).range(format!("bytes={first}-{last}"));
                if let Some(etag) = etag {
                    request = request.if_match(etag);
                }
                let mut body = request.send().await.map_err(|e| explain(&e, url, "downloading", &target(s3)))?.body;
                let mut offset = first;
                while let Some(chunk) = body.try_next().await.with_context(|| format!("downloading {url}: connection lost"))? {
                    file.write_all_at(&chunk, offset).map_err(|e| crate::fsutil::io_error(e, "writing", &plan.file))?;
                    offset += chunk.len() as u64;
                    bar.position(done.fetch_add(chunk.len() as u64, Ordering::SeqCst) + chunk.len() as u64);
                }
                if offset != last + 1 {
                    bail!("downloading {url}: range {first}-{last} ended early at {offset}; try again");
                }
                Ok::<_, anyhow::Error>(())
            }
        })
        .buffer_unordered(plan.concurrency.max(1));
    let fetched: Result<Vec<()>> = tokio::select! {
        result = fetch.try_collect() => result,
        signal = super::interrupt_signal() => Err(anyhow::anyhow!("interrupted by {signal}")),
    };
    if let Err(err) = fetched {
        bar.finish("FAILED", started.elapsed());
        return Err(err); // the pending temp file is removed when dropped
    }
    bar.finish(&format!("{len} bytes"), started.elapsed());
    drop(file);

    let actual = crate::checksum::sha256_file(pending.path())?;
    if let Some(expected) = &remote_digest {
        if &actual != expected {
            bail!(
                "checksum mismatch for {url}: the object's sha256 is {expected}, the downloaded bytes have {actual}; nothing was written to {}",
                plan.file.display()
            );
        }
    }
    pending.commit()?;
    write_sidecar(&plan.file, &actual)?;
    Ok(Downloaded::Fetched {
        digest: remote_digest,
        bytes: len,
    })
}

fn write_sidecar(file: &Path, digest: &str) -> Result<()> {
    let line = crate::checksum::sidecar_line(digest, file);
    crate::output::write_atomically(&crate::checksum::sidecar_path(file), line.as_bytes())
}

pub(super) async fn bucket_exists(s3: &S3Client, bucket: &str) -> bool {
    match s3.client.head_bucket().bucket(bucket).send().await {
        Ok(_) => true,
        Err(err) => err.raw_response().map(|r| r.status().as_u16()) != Some(404),
    }
}

/// The digest from `KEY.sha256`, when that object exists.
async fn sidecar_digest(s3: &S3Client, url: &S3Url) -> Result<Option<String>> {
    let sidecar = url.sidecar();
    match s3
        .client
        .get_object()
        .bucket(&sidecar.bucket)
        .key(&sidecar.key)
        .send()
        .await
    {
        Ok(output) => {
            let bytes = output
                .body
                .collect()
                .await
                .with_context(|| format!("reading {sidecar}"))?
                .into_bytes();
            match crate::checksum::parse_sidecar(&String::from_utf8_lossy(&bytes)) {
                Some(digest) => Ok(Some(digest)),
                None => bail!("{sidecar} does not hold a sha256 digest: upload the image again with upload-os-image"),
            }
        }
        Err(err) if err.raw_response().map(|r| r.status().as_u16()) == Some(404) => Ok(None),
        Err(err) => Err(explain(&err, &sidecar, "downloading", &target(s3))),
    }
}
