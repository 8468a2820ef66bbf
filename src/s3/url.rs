//! `s3://bucket/key` addresses.

use std::fmt;
use std::str::FromStr;

use anyhow::bail;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct S3Url {
    pub bucket: String,
    pub key: String,
}

impl S3Url {
    /// The address of the object holding this one's sha256 sidecar.
    pub fn sidecar(&self) -> S3Url {
        S3Url {
            bucket: self.bucket.clone(),
            key: format!("{}.sha256", self.key),
        }
    }

    pub fn is_s3(text: &str) -> bool {
        text.starts_with("s3://")
    }
}

impl FromStr for S3Url {
    type Err = anyhow::Error;

    fn from_str(text: &str) -> anyhow::Result<Self> {
        let Some(rest) = text.strip_prefix("s3://") else {
            bail!("'{text}' is not an S3 URL: write s3://BUCKET/KEY");
        };
        let Some((bucket, key)) = rest.split_once('/') else {
            bail!("'{text}' has no key: write s3://BUCKET/KEY");
        };
        if bucket.is_empty() || key.is_empty() || key.ends_with('/') {
            bail!(
                "'{text}' needs a bucket and an object key: write s3://BUCKET/path/to/os-image.tgz"
            );
        }
        Ok(S3Url {
            bucket: bucket.into(),
            key: key.into(),
        })
    }
}

impl fmt::Display for S3Url {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "s3://{}/{}", self.bucket, self.key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_refuses() {
        let url: S3Url = "s3://os-images/debian-trixie/os-image.tgz".parse().unwrap();
        assert_eq!(
            (url.bucket.as_str(), url.key.as_str()),
            ("os-images", "debian-trixie/os-image.tgz")
        );
        assert_eq!(
            url.sidecar().to_string(),
            "s3://os-images/debian-trixie/os-image.tgz.sha256"
        );
        for bad in [
            "os-images/x",
            "s3://bucket",
            "s3:///key",
            "s3://bucket/dir/",
        ] {
            assert!(bad.parse::<S3Url>().is_err(), "{bad}");
        }
    }
}
