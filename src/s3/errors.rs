//! S3 failures as one line a user can act on, naming the bucket and key. Classification works on
//! what a response carries (error code, HTTP status, region header), so it is tested directly.

use aws_sdk_s3::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};

use super::S3Url;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum S3Failure {
    NoSuchBucket,
    NoSuchKey,
    AccessDenied,
    BadCredentials(String),
    NoCredentials,
    Unreachable,
    WrongRegion { actual: Option<String> },
    Other(String),
}

/// What a failed request told us.
#[derive(Debug, Default, Clone)]
pub struct Observed {
    pub code: Option<String>,
    pub message: Option<String>,
    pub status: Option<u16>,
    /// The request never got an HTTP response (connection refused, DNS, TLS, timeout).
    pub no_response: bool,
    pub bucket_region: Option<String>,
    /// The SDK's full description, for the rare case nothing else says what happened.
    pub detail: String,
}

pub fn classify(seen: &Observed) -> S3Failure {
    let code = seen.code.as_deref().unwrap_or("");
    if seen.detail.contains("no credentials")
        || seen.detail.contains("NoCredentials")
        || seen
            .detail
            .contains("the credential provider was not enabled")
    {
        return S3Failure::NoCredentials;
    }
    match code {
        "NoSuchBucket" => return S3Failure::NoSuchBucket,
        "NoSuchKey" | "NotFound" if seen.status == Some(404) || code == "NoSuchKey" => {
            return S3Failure::NoSuchKey
        }
        "InvalidAccessKeyId"
        | "SignatureDoesNotMatch"
        | "InvalidToken"
        | "ExpiredToken"
        | "TokenRefreshRequired" => return S3Failure::BadCredentials(code.to_string()),
        "AccessDenied" | "AllAccessDisabled" => return S3Failure::AccessDenied,
        "PermanentRedirect"
        | "AuthorizationHeaderMalformed"
        | "IllegalLocationConstraintException" => {
            return S3Failure::WrongRegion {
                actual: seen.bucket_region.clone(),
            }
        }
        _ => {}
    }
    if seen.status == Some(301) || (seen.bucket_region.is_some() && seen.status == Some(400)) {
        return S3Failure::WrongRegion {
            actual: seen.bucket_region.clone(),
        };
    }
    if seen.no_response {
        return S3Failure::Unreachable;
    }
    match seen.status {
        Some(403) => S3Failure::AccessDenied,
        Some(404) => S3Failure::NoSuchKey,
        _ => S3Failure::Other(match (&seen.code, &seen.message) {
            (Some(code), Some(message)) => format!("{code}: {message}"),
            (Some(code), None) => code.clone(),
            _ => seen.detail.clone(),
        }),
    }
}

pub fn observe<E>(err: &SdkError<E, aws_sdk_s3::config::http::HttpResponse>) -> Observed
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    let response = err.raw_response();
    Observed {
        code: err.code().map(str::to_string),
        message: err.message().map(str::to_string),
        status: response.map(|r| r.status().as_u16()),
        no_response: matches!(
            err,
            SdkError::DispatchFailure(_) | SdkError::TimeoutError(_)
        ),
        bucket_region: response
            .and_then(|r| r.headers().get("x-amz-bucket-region"))
            .map(str::to_string),
        detail: format!("{}", DisplayErrorContext(err)),
    }
}

/// Where the client sends requests, for messages.
pub struct Target<'a> {
    pub endpoint: Option<&'a str>,
    pub region: &'a str,
}

pub fn message(failure: &S3Failure, url: &S3Url, action: &str, target: &Target) -> String {
    let bucket = &url.bucket;
    match failure {
        S3Failure::NoSuchBucket => {
            format!("{action} {url}: bucket '{bucket}' does not exist: create it (aws s3 mb s3://{bucket}) or fix the URL")
        }
        S3Failure::NoSuchKey => format!(
            "{action} {url}: no object with key '{}' in bucket '{bucket}': check the key (aws s3 ls s3://{bucket}/)",
            url.key
        ),
        S3Failure::AccessDenied => format!(
            "{action} {url}: access denied to bucket '{bucket}', key '{}': these credentials lack permission; check the bucket policy or use other credentials",
            url.key
        ),
        S3Failure::BadCredentials(code) => format!(
            "{action} {url}: the store rejected the credentials ({code}) for bucket '{bucket}': check AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or AWS_PROFILE"
        ),
        S3Failure::NoCredentials => format!(
            "{action} {url}: no AWS credentials found: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or AWS_PROFILE"
        ),
        S3Failure::Unreachable => match target.endpoint {
            Some(endpoint) => format!(
                "{action} {url}: cannot reach the S3 endpoint {endpoint}: check --endpoint / AWS_ENDPOINT_URL and that the store is running"
            ),
            None => format!(
                "{action} {url}: cannot reach S3 in region {}: check the network, or pass --endpoint for an S3-compatible store",
                target.region
            ),
        },
        S3Failure::WrongRegion { actual } => match actual {
            Some(actual) => format!(
                "{action} {url}: bucket '{bucket}' is in region {actual}, not {}: pass --region {actual} or set AWS_REGION={actual}",
                target.region
            ),
            None => format!(
                "{action} {url}: bucket '{bucket}' is not in region {}: pass --region with the bucket's region or set AWS_REGION",
                target.region
            ),
        },
        S3Failure::Other(detail) => format!("{action} {url} failed: {detail}"),
    }
}

/// The one-line error for a failed SDK call.
pub fn explain<E>(
    err: &SdkError<E, aws_sdk_s3::config::http::HttpResponse>,
    url: &S3Url,
    action: &str,
    target: &Target,
) -> anyhow::Error
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    anyhow::anyhow!(message(&classify(&observe(err)), url, action, target))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seen(code: Option<&str>, status: Option<u16>) -> Observed {
        Observed {
            code: code.map(str::to_string),
            status,
            ..Default::default()
        }
    }

    #[test]
    fn classification() {
        assert_eq!(
            classify(&seen(Some("NoSuchBucket"), Some(404))),
            S3Failure::NoSuchBucket
        );
        assert_eq!(
            classify(&seen(Some("NoSuchKey"), Some(404))),
            S3Failure::NoSuchKey
        );
        assert_eq!(classify(&seen(None, Some(404))), S3Failure::NoSuchKey);
        assert_eq!(
            classify(&seen(Some("AccessDenied"), Some(403))),
            S3Failure::AccessDenied
        );
        assert_eq!(classify(&seen(None, Some(403))), S3Failure::AccessDenied);
        assert!(matches!(
            classify(&seen(Some("SignatureDoesNotMatch"), Some(403))),
            S3Failure::BadCredentials(_)
        ));
        let mut redirect = seen(Some("PermanentRedirect"), Some(301));
        redirect.bucket_region = Some("eu-west-1".into());
        assert_eq!(
            classify(&redirect),
            S3Failure::WrongRegion {
                actual: Some("eu-west-1".into())
            }
        );
        let mut head_redirect = seen(None, Some(301));
        head_redirect.bucket_region = Some("eu-west-1".into());
        assert_eq!(
            classify(&head_redirect),
            S3Failure::WrongRegion {
                actual: Some("eu-west-1".into())
            }
        );
        let unreachable = Observed {
            no_response: true,
            ..Default::default()
        };
        assert_eq!(classify(&unreachable), S3Failure::Unreachable);
    }

    #[test]
    fn messages_name_bucket_key_and_fix() {
        let url: S3Url = "s3://b/k.tgz".parse().unwrap();
        let target = Target {
            endpoint: Some("http://127.0.0.1:1"),
            region: "us-east-1",
        };
        let wrong = message(
            &S3Failure::WrongRegion {
                actual: Some("eu-west-1".into()),
            },
            &url,
            "downloading",
            &target,
        );
        assert!(
            wrong.contains("--region eu-west-1") && wrong.contains("'b'"),
            "{wrong}"
        );
        let gone = message(&S3Failure::Unreachable, &url, "uploading", &target);
        assert!(
            gone.contains("http://127.0.0.1:1") && gone.contains("s3://b/k.tgz"),
            "{gone}"
        );
        for failure in [
            S3Failure::NoSuchBucket,
            S3Failure::NoSuchKey,
            S3Failure::AccessDenied,
        ] {
            let text = message(&failure, &url, "x", &target);
            assert!(
                text.contains("s3://b/k.tgz") && !text.contains('\n'),
                "{text}"
            );
        }
    }
}
