//! Software bills of materials, made natively from the image's dpkg database: SPDX 2.3 JSON and
//! CycloneDX 1.5 JSON. The same packages and inputs give the same documents (identifiers are
//! derived from the content; the time is `SOURCE_DATE_EPOCH` when set).

use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::packages::InstalledPackage;

pub struct SbomSubject<'a> {
    /// The stemcell's name (`bosh-openstack-kvm-debian-trixie-go_agent`).
    pub name: &'a str,
    pub version: &'a str,
    /// `debian` or `ubuntu` (the purl namespace).
    pub os_name: &'a str,
    pub os_version: &'a str,
    pub packages: &'a [InstalledPackage],
}

const TOOL: &str = concat!("stemcell-builder-", env!("CARGO_PKG_VERSION"));

fn timestamp() -> String {
    let now = time::OffsetDateTime::from_unix_timestamp(crate::archive::build_time() as i64)
        .unwrap_or_else(|_| time::OffsetDateTime::now_utc());
    let format =
        time::macros::format_description!("[year]-[month]-[day]T[hour]:[minute]:[second]Z");
    now.format(&format).expect("a UTC time formats")
}

/// A version-4-shaped UUID from the content, so the same input names the same document.
fn content_uuid(subject: &SbomSubject, kind: &str) -> String {
    let mut hasher = Sha256::new();
    hasher.update(kind.as_bytes());
    hasher.update(subject.name.as_bytes());
    hasher.update(subject.version.as_bytes());
    for p in subject.packages {
        hasher.update(format!("{} {} {}\n", p.name, p.version, p.arch).as_bytes());
    }
    let digest = hasher.finalize();
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    bytes[6] = (bytes[6] & 0x0f) | 0x40;
    bytes[8] = (bytes[8] & 0x3f) | 0x80;
    let hex = hex::encode(bytes);
    format!(
        "{}-{}-{}-{}-{}",
        &hex[..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..]
    )
}

/// purl components are percent-encoded except for unreserved characters.
fn purl_encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'.' | b'-' | b'_' | b'~' => {
                (b as char).to_string()
            }
            other => format!("%{other:02X}"),
        })
        .collect()
}

pub fn purl(package: &InstalledPackage, subject: &SbomSubject) -> String {
    format!(
        "pkg:deb/{}/{}@{}?arch={}&distro={}-{}",
        subject.os_name,
        purl_encode(&package.name),
        purl_encode(&package.version),
        purl_encode(&package.arch),
        subject.os_name,
        subject.os_version
    )
}

fn spdx_id(index: usize, package: &InstalledPackage) -> String {
    let clean: String = package
        .name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                c
            } else {
                '-'
            }
        })
        .collect();
    format!("SPDXRef-deb-{index}-{clean}")
}

/// An SPDX package with the fields a dpkg database cannot assert (licences, copyright,
/// supplier, download location) set to NOASSERTION.
fn spdx_package(fields: Value) -> Value {
    let mut package = json!({
        "downloadLocation": "NOASSERTION",
        "filesAnalyzed": false,
        "licenseConcluded": "NOASSERTION",
        "licenseDeclared": "NOASSERTION",
        "copyrightText": "NOASSERTION",
        "supplier": "NOASSERTION",
    });
    if let (Some(package), Value::Object(fields)) = (package.as_object_mut(), fields) {
        package.extend(fields);
    }
    package
}

pub fn spdx(subject: &SbomSubject) -> Value {
    let root = "SPDXRef-OperatingSystem";
    let mut packages = vec![spdx_package(json!({
        "SPDXID": root,
        "name": subject.name,
        "versionInfo": subject.version,
        "primaryPackagePurpose": "OPERATING-SYSTEM",
        "comment": format!("{}-{} root filesystem", subject.os_name, subject.os_version),
    }))];
    let mut relationships = vec![json!({
        "spdxElementId": "SPDXRef-DOCUMENT",
        "relationshipType": "DESCRIBES",
        "relatedSpdxElement": root,
    })];
    for (index, package) in subject.packages.iter().enumerate() {
        let id = spdx_id(index, package);
        packages.push(spdx_package(json!({
            "SPDXID": id,
            "name": package.name,
            "versionInfo": package.version,
            "primaryPackagePurpose": "LIBRARY",
            "externalRefs": [{
                "referenceCategory": "PACKAGE-MANAGER",
                "referenceType": "purl",
                "referenceLocator": purl(package, subject),
            }],
        })));
        relationships.push(json!({
            "spdxElementId": root,
            "relationshipType": "CONTAINS",
            "relatedSpdxElement": id,
        }));
    }
    json!({
        "spdxVersion": "SPDX-2.3",
        "dataLicense": "CC0-1.0",
        "SPDXID": "SPDXRef-DOCUMENT",
        "name": format!("{}-{}", subject.name, subject.version),
        "documentNamespace": format!(
            "https://spdx.org/spdxdocs/{}-{}-{}",
            subject.name,
            subject.version,
            content_uuid(subject, "spdx")
        ),
        "creationInfo": {
            "created": timestamp(),
            "creators": [format!("Tool: {TOOL}")],
        },
        "packages": packages,
        "relationships": relationships,
    })
}

pub fn cyclonedx(subject: &SbomSubject) -> Value {
    let components: Vec<Value> = subject
        .packages
        .iter()
        .map(|package| {
            let purl = purl(package, subject);
            json!({
                "type": "library",
                "bom-ref": purl,
                "name": package.name,
                "version": package.version,
                "purl": purl,
            })
        })
        .collect();
    let refs: Vec<Value> = components.iter().map(|c| c["bom-ref"].clone()).collect();
    json!({
        "$schema": "http://cyclonedx.org/schema/bom-1.5.schema.json",
        "bomFormat": "CycloneDX",
        "specVersion": "1.5",
        "serialNumber": format!("urn:uuid:{}", content_uuid(subject, "cyclonedx")),
        "version": 1,
        "metadata": {
            "timestamp": timestamp(),
            "tools": {
                "components": [{
                    "type": "application",
                    "name": "stemcell-builder",
                    "version": env!("CARGO_PKG_VERSION"),
                }],
            },
            "component": {
                "type": "operating-system",
                "bom-ref": "stemcell",
                "name": subject.name,
                "version": subject.version,
                "description": format!("{}-{} root filesystem", subject.os_name, subject.os_version),
            },
        },
        "components": components,
        "dependencies": [{ "ref": "stemcell", "dependsOn": refs }],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn packages() -> Vec<InstalledPackage> {
        vec![
            InstalledPackage {
                name: "libstdc++6".into(),
                version: "14.2.0-19".into(),
                arch: "amd64".into(),
            },
            InstalledPackage {
                name: "sudo".into(),
                version: "1:1.9.16p2-3".into(),
                arch: "amd64".into(),
            },
        ]
    }

    #[test]
    fn purls_are_encoded_and_ids_are_valid() {
        let pkgs = packages();
        let subject = SbomSubject {
            name: "s",
            version: "1",
            os_name: "debian",
            os_version: "trixie",
            packages: &pkgs,
        };
        assert_eq!(
            purl(&pkgs[0], &subject),
            "pkg:deb/debian/libstdc%2B%2B6@14.2.0-19?arch=amd64&distro=debian-trixie"
        );
        assert_eq!(
            purl(&pkgs[1], &subject),
            "pkg:deb/debian/sudo@1%3A1.9.16p2-3?arch=amd64&distro=debian-trixie"
        );
        let doc = spdx(&subject);
        assert_eq!(doc["packages"][1]["SPDXID"], "SPDXRef-deb-0-libstdc--6");
        assert_eq!(doc["packages"].as_array().unwrap().len(), 3);
        assert_eq!(
            spdx(&subject)["documentNamespace"],
            doc["documentNamespace"],
            "deterministic"
        );
        let bom = cyclonedx(&subject);
        assert_eq!(bom["components"].as_array().unwrap().len(), 2);
        assert!(bom["serialNumber"]
            .as_str()
            .unwrap()
            .starts_with("urn:uuid:"));
    }
}
