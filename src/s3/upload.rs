//! `upload-os-image`: multipart above a threshold with bounded concurrent parts streamed from
//! disk, the sha256 as metadata and as a `KEY.sha256` object. A failed upload aborts its
//! multipart upload (retrying the abort while the store is unreachable), so no object appears
//! under the final key and no parts are left behind. An upload that could not abort (it was
//! SIGKILLed) is recorded in the state dir, and the next upload to the key aborts it; uploads
//! of other jobs to the same key are never touched.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use aws_sdk_s3::primitives::{ByteStream, Length};
use aws_sdk_s3::types::{ChecksumAlgorithm, CompletedMultipartUpload, CompletedPart};
use futures::stream::{self, StreamExt, TryStreamExt};

use super::client::{self, S3Client};
use super::errors::{explain, Target};
use super::pending::PendingUploads;
use super::{ChecksumMode, S3Options, S3Url, SHA256_METADATA};
use crate::progress::Reporter;

#[derive(Debug, Clone)]
pub struct UploadPlan {
    pub file: PathBuf,
    pub url: S3Url,
    pub options: S3Options,
    /// Files at least this large go multipart.
    pub multipart_threshold: u64,
    pub part_size: u64,
    /// Parts in flight at once.
    pub concurrency: usize,
    /// Where multipart uploads in flight are recorded (see `pending`); `None`: not recorded,
    /// and no earlier upload is cleaned up.
    pub state_dir: Option<PathBuf>,
}

pub const DEFAULT_PART_SIZE: u64 = 16 << 20;
/// S3 allows at most 10,000 parts.
const MAX_PARTS: u64 = 10_000;

impl UploadPlan {
    pub fn new(file: PathBuf, url: S3Url, options: S3Options) -> Self {
        Self {
            file,
            url,
            options,
            multipart_threshold: DEFAULT_PART_SIZE,
            part_size: DEFAULT_PART_SIZE,
            concurrency: 4,
            state_dir: None,
        }
    }
}

/// Part size for `len` bytes: the requested size, grown until it needs at most 10,000 parts.
pub fn part_size_for(len: u64, requested: u64) -> u64 {
    let minimum = len.div_ceil(MAX_PARTS);
    requested.max(minimum).max(5 << 20)
}

pub fn upload(plan: &UploadPlan, reporter: &Reporter) -> Result<String> {
    let meta = std::fs::metadata(&plan.file).with_context(|| {
        format!(
            "cannot read {}: pass an existing OS image file",
            plan.file.display()
        )
    })?;
    if !meta.is_file() {
        bail!("{} is not a file", plan.file.display());
    }
    let step = reporter.step(&format!("sha256 {}", plan.file.display()));
    let started = Instant::now();
    let digest = crate::checksum::sha256_file(&plan.file)?;
    step.finish(&digest, started.elapsed());
    crate::checksum::check_sidecar(&plan.file, &digest)?;
    let runtime = super::runtime()?;
    runtime.block_on(async {
        let s3 = client::build(&plan.options).await;
        ensure_bucket(&s3, &plan.url).await?;
        let bar = reporter.bytes(&format!("upload {}", plan.url), meta.len());
        let started = Instant::now();
        let result = if meta.len() >= plan.multipart_threshold {
            multipart(&s3, plan, meta.len(), &digest, &bar).await
        } else {
            single(&s3, plan, &digest).await
        };
        match result {
            Ok(()) => bar.finish(&format!("{} bytes", meta.len()), started.elapsed()),
            Err(err) => {
                bar.finish("FAILED", started.elapsed());
                return Err(err);
            }
        }
        put_sidecar(&s3, plan, &digest).await
    })?;
    Ok(digest)
}

/// Some stores create a missing bucket on the first write; an upload must not.
async fn ensure_bucket(s3: &S3Client, url: &S3Url) -> Result<()> {
    match s3.client.head_bucket().bucket(&url.bucket).send().await {
        Ok(_) => Ok(()),
        Err(err) => {
            if err.raw_response().map(|r| r.status().as_u16()) == Some(404) {
                bail!(super::errors::message(
                    &super::errors::S3Failure::NoSuchBucket,
                    url,
                    "uploading to",
                    &target(s3)
                ));
            }
            // HEAD carries no error code; a tiny listing does, for credentials and permissions.
            match s3
                .client
                .list_objects_v2()
                .bucket(&url.bucket)
                .max_keys(1)
                .send()
                .await
            {
                Ok(_) => Ok(()),
                Err(list_err) => Err(explain(&list_err, url, "uploading to", &target(s3))),
            }
        }
    }
}

fn target(s3: &S3Client) -> Target<'_> {
    Target {
        endpoint: s3.endpoint.as_deref(),
        region: &s3.region,
    }
}

fn wants_checksums(options: &S3Options) -> bool {
    options.checksums != Some(ChecksumMode::WhenRequired)
}

async fn single(s3: &S3Client, plan: &UploadPlan, digest: &str) -> Result<()> {
    let body = ByteStream::from_path(&plan.file)
        .await
        .with_context(|| format!("reading {}", plan.file.display()))?;
    s3.client
        .put_object()
        .bucket(&plan.url.bucket)
        .key(&plan.url.key)
        .metadata(SHA256_METADATA, digest)
        .body(body)
        .send()
        .await
        .map_err(|e| explain(&e, &plan.url, "uploading to", &target(s3)))?;
    Ok(())
}

async fn put_sidecar(s3: &S3Client, plan: &UploadPlan, digest: &str) -> Result<()> {
    let sidecar = plan.url.sidecar();
    let name = plan.url.key.rsplit('/').next().unwrap_or(&plan.url.key);
    s3.client
        .put_object()
        .bucket(&sidecar.bucket)
        .key(&sidecar.key)
        .content_type("text/plain")
        .body(ByteStream::from(format!("{digest}  {name}\n").into_bytes()))
        .send()
        .await
        .map_err(|e| explain(&e, &sidecar, "uploading", &target(s3)))?;
    Ok(())
}

async fn multipart(
    s3: &S3Client,
    plan: &UploadPlan,
    len: u64,
    digest: &str,
    bar: &crate::progress::Step,
) -> Result<()> {
    let url = &plan.url;
    let pending = plan.state_dir.as_deref().map(PendingUploads::new);
    if let Some(pending) = &pending {
        abort_abandoned(s3, url, pending, bar).await;
    }
    let mut create = s3
        .client
        .create_multipart_upload()
        .bucket(&url.bucket)
        .key(&url.key)
        .metadata(SHA256_METADATA, digest);
    if wants_checksums(&plan.options) {
        create = create.checksum_algorithm(ChecksumAlgorithm::Crc32);
    }
    let created = create
        .send()
        .await
        .map_err(|e| explain(&e, url, "uploading to", &target(s3)))?;
    let upload_id = created
        .upload_id()
        .context("the store returned no upload id")?
        .to_string();
    let record = match &pending {
        Some(pending) => {
            match pending.record(s3.endpoint.as_deref(), &url.bucket, &url.key, &upload_id) {
                Ok(record) => Some(record),
                Err(err) => {
                    abort(s3, url, &upload_id).await?;
                    return Err(err);
                }
            }
        }
        None => None,
    };
    let forget = || {
        if let (Some(pending), Some(record)) = (&pending, &record) {
            pending.forget(record);
        }
    };

    let part_size = part_size_for(len, plan.part_size);
    let count = len.div_ceil(part_size);
    let done = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let parts = stream::iter(0..count)
        .map(|index| {
            let upload_id = upload_id.clone();
            let done = done.clone();
            async move {
                let offset = index * part_size;
                let length = part_size.min(len - offset);
                let body = ByteStream::read_from()
                    .path(&plan.file)
                    .offset(offset)
                    .length(Length::Exact(length))
                    .build()
                    .await
                    .with_context(|| format!("reading {}", plan.file.display()))?;
                let mut request = s3
                    .client
                    .upload_part()
                    .bucket(&url.bucket)
                    .key(&url.key)
                    .upload_id(&upload_id)
                    .part_number(index as i32 + 1)
                    .content_length(length as i64)
                    .body(body);
                if wants_checksums(&plan.options) {
                    request = request.checksum_algorithm(ChecksumAlgorithm::Crc32);
                }
                let output = request
                    .send()
                    .await
                    .map_err(|e| explain(&e, url, "uploading to", &target(s3)))?;
                let total = done.fetch_add(length, std::sync::atomic::Ordering::SeqCst) + length;
                bar.position(total);
                bar.line(&format!("part {}/{count} uploaded", index + 1));
                Ok::<_, anyhow::Error>(
                    CompletedPart::builder()
                        .part_number(index as i32 + 1)
                        .set_e_tag(output.e_tag().map(str::to_string))
                        .set_checksum_crc32(output.checksum_crc32().map(str::to_string))
                        .build(),
                )
            }
        })
        .buffer_unordered(plan.concurrency.max(1));

    let uploaded = tokio::select! {
        result = parts.try_collect::<Vec<CompletedPart>>() => result,
        signal = super::interrupt_signal() => Err(anyhow::anyhow!("interrupted by {signal}")),
    };
    let completed = match uploaded {
        Ok(mut parts) => {
            parts.sort_by_key(|p| p.part_number());
            s3.client
                .complete_multipart_upload()
                .bucket(&url.bucket)
                .key(&url.key)
                .upload_id(&upload_id)
                .multipart_upload(
                    CompletedMultipartUpload::builder()
                        .set_parts(Some(parts))
                        .build(),
                )
                .send()
                .await
                .map(drop)
                .map_err(|e| explain(&e, url, "uploading to", &target(s3)))
        }
        Err(err) => Err(err),
    };
    if let Err(err) = completed {
        bar.line(&format!(
            "upload failed ({err}); aborting multipart upload {upload_id}"
        ));
        abort(s3, url, &upload_id).await?;
        forget();
        return Err(err);
    }
    forget();
    Ok(())
}

/// Aborts, retrying for about a minute: the failure that got us here may be the store itself
/// being briefly away, and an upload left open keeps its parts (and their cost) forever.
async fn abort(s3: &S3Client, url: &S3Url, upload_id: &str) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut wait = Duration::from_millis(500);
    loop {
        let result = s3
            .client
            .abort_multipart_upload()
            .bucket(&url.bucket)
            .key(&url.key)
            .upload_id(upload_id)
            .send()
            .await;
        match result {
            Ok(_) => return Ok(()),
            Err(e) if Instant::now() >= deadline => {
                bail!(
                    "{}; the multipart upload {upload_id} could not be aborted: the next upload to {url} removes it, or run `aws s3api abort-multipart-upload --bucket {} --key {} --upload-id {upload_id}`",
                    explain(&e, url, "aborting the upload to", &target(s3)),
                    url.bucket,
                    url.key
                )
            }
            Err(_) => {
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(Duration::from_secs(8));
            }
        }
    }
}

/// Aborts the multipart uploads to this key that an earlier run of ours started and could not
/// finish or abort (it was killed). Another job's upload to the same key is not in our records,
/// so it is left alone, however old.
async fn abort_abandoned(
    s3: &S3Client,
    url: &S3Url,
    pending: &PendingUploads,
    bar: &crate::progress::Step,
) {
    for upload in pending.abandoned(s3.endpoint.as_deref(), &url.bucket, &url.key) {
        let result = s3
            .client
            .abort_multipart_upload()
            .bucket(&url.bucket)
            .key(&url.key)
            .upload_id(&upload.upload_id)
            .send()
            .await;
        let gone = match &result {
            Ok(_) => true,
            // Already completed or aborted: nothing left to clean.
            Err(e) => e.raw_response().is_some_and(|r| r.status().as_u16() == 404),
        };
        if gone {
            bar.line(&format!(
                "aborted multipart upload {} left open by an earlier, interrupted upload (pid {})",
                upload.upload_id, upload.pid
            ));
            pending.forget(&upload);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn part_size_respects_the_part_limit() {
        assert_eq!(part_size_for(100 << 20, 16 << 20), 16 << 20);
        let huge = 400u64 << 30;
        assert!(huge.div_ceil(part_size_for(huge, 16 << 20)) <= MAX_PARTS);
        assert_eq!(part_size_for(1, 1), 5 << 20, "S3's minimum part size");
    }
}
