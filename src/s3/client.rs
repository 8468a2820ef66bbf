//! The one place an S3 client is built: the standard credential and region chain, an optional
//! endpoint for S3-compatible stores, path-style addressing, checksum behaviour, retries.

use std::time::Duration;

use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_config::BehaviorVersion;
use aws_sdk_s3::config::{Region, RequestChecksumCalculation, ResponseChecksumValidation};
use aws_sdk_s3::Client;

/// Newer SDKs send CRC checksums on every upload; some S3-compatible stores reject them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ChecksumMode {
    /// The SDK's default: checksums on every request that supports them (AWS, SeaweedFS).
    WhenSupported,
    /// Only where the API requires one, for stores that reject the default.
    WhenRequired,
}

#[derive(Debug, Clone, Default)]
pub struct S3Options {
    /// `--endpoint`; `AWS_ENDPOINT_URL` is read by the standard chain when this is unset.
    pub endpoint: Option<String>,
    pub path_style: bool,
    /// `--region`; else the standard chain (`AWS_REGION`, profile), else us-east-1.
    pub region: Option<String>,
    /// `None`: the SDK's default, or `AWS_REQUEST_CHECKSUM_CALCULATION` / `..._VALIDATION`.
    pub checksums: Option<ChecksumMode>,
    /// Attempts per request for transient failures, with exponential backoff.
    pub max_attempts: u32,
}

impl S3Options {
    pub fn with_defaults(mut self) -> Self {
        if self.max_attempts == 0 {
            self.max_attempts = 4;
        }
        self
    }
}

pub struct S3Client {
    pub client: Client,
    pub region: String,
    pub endpoint: Option<String>,
}

pub async fn build(options: &S3Options) -> S3Client {
    let options = options.clone().with_defaults();
    let mut loader = aws_config::defaults(BehaviorVersion::latest())
        .retry_config(
            RetryConfig::standard()
                .with_max_attempts(options.max_attempts)
                .with_initial_backoff(Duration::from_millis(200)),
        )
        .timeout_config(
            TimeoutConfig::builder()
                .connect_timeout(Duration::from_secs(5))
                .build(),
        );
    if let Some(region) = &options.region {
        loader = loader.region(Region::new(region.clone()));
    }
    if let Some(endpoint) = &options.endpoint {
        loader = loader.endpoint_url(endpoint);
    }
    let shared = loader.load().await;
    let region = shared
        .region()
        .map(|r| r.to_string())
        .unwrap_or_else(|| "us-east-1".into());
    let endpoint = shared.endpoint_url().map(str::to_string);
    let mut config = aws_sdk_s3::config::Builder::from(&shared)
        .region(Region::new(region.clone()))
        .force_path_style(options.path_style);
    match options.checksums {
        Some(ChecksumMode::WhenSupported) => {
            config = config
                .request_checksum_calculation(RequestChecksumCalculation::WhenSupported)
                .response_checksum_validation(ResponseChecksumValidation::WhenSupported)
        }
        Some(ChecksumMode::WhenRequired) => {
            config = config
                .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
                .response_checksum_validation(ResponseChecksumValidation::WhenRequired)
        }
        None => {}
    }
    S3Client {
        client: Client::from_conf(config.build()),
        region,
        endpoint,
    }
}
