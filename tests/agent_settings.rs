//! The agent settings file each IaaS's stemcell gets (`stages/bosh_agent_settings/assets/`,
//! installed as /var/vcap/bosh/agent.json) holds only keys the BOSH agent reads, with the types
//! its structures declare (the list in `audit::agent_settings`, taken from the agent's source),
//! and names the settings source the IaaS offers. No build needed: it reads the files.

mod support;

use std::collections::BTreeSet;
use std::fs;

use stemcell_builder::audit::agent_settings::{known_keys, validate};

fn settings(iaas: &str) -> String {
    let path = support::repo().join(format!("stages/bosh_agent_settings/assets/{iaas}.json"));
    fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The IaaS that collections.yml builds stemcells for (`stemcell-IAAS`).
fn collection_iaas() -> BTreeSet<String> {
    let text = fs::read_to_string(support::repo().join("stages/collections.yml")).unwrap();
    let doc: serde_yaml_ng::Value = serde_yaml_ng::from_str(&text).unwrap();
    doc["collections"]
        .as_mapping()
        .unwrap()
        .keys()
        .filter_map(|k| k.as_str()?.strip_prefix("stemcell-").map(str::to_string))
        .collect()
}

#[test]
fn every_iaas_agent_json_holds_only_keys_the_agent_reads() {
    let dir = support::repo().join("stages/bosh_agent_settings/assets");
    let files: BTreeSet<String> = fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .filter_map(|e| {
            e.file_name()
                .to_str()?
                .strip_suffix(".json")
                .map(str::to_string)
        })
        .collect();
    assert_eq!(files, collection_iaas(), "one agent.json per stemcell IaaS");
    for iaas in &files {
        let text = settings(iaas);
        if let Err(e) = validate(&text) {
            panic!("{iaas}.json: {e}");
        }
        // The same file with a key the agent does not have is refused, naming it.
        let doc: serde_json::Value = serde_json::from_str(&text).unwrap();
        let mut extra = doc.clone();
        extra["Infrastructure"]["Settings"]["UseRegistry"] = serde_json::json!(true);
        let err = validate(&extra.to_string()).unwrap_err();
        assert!(err.contains("Infrastructure.Settings.UseRegistry"), "{err}");
        let mut extra = doc.clone();
        extra["Platform"]["Linux"]["VirtioDevicePrefix"] = serde_json::json!("google");
        assert!(validate(&extra.to_string()).is_err(), "{iaas}");
    }
}

#[test]
fn every_key_set_is_one_the_agent_declares() {
    // Flattened the way known_keys() names them, each key of each file is in the agent's list.
    fn flatten(prefix: &str, value: &serde_json::Value, out: &mut Vec<String>) {
        match value {
            serde_json::Value::Object(map) => {
                for (k, v) in map {
                    let path = if prefix.is_empty() {
                        k.clone()
                    } else {
                        format!("{prefix}.{k}")
                    };
                    if k == "Headers" {
                        out.push(path);
                    } else {
                        flatten(&path, v, out);
                    }
                }
            }
            serde_json::Value::Array(items) if prefix.ends_with("Sources") => {
                for item in items {
                    let kind = item["Type"].as_str().unwrap();
                    flatten(&format!("{prefix}[{kind}]"), item, out);
                }
            }
            _ => out.push(prefix.to_string()),
        }
    }
    let known: BTreeSet<String> = known_keys().into_iter().collect();
    for iaas in collection_iaas() {
        let doc: serde_json::Value = serde_json::from_str(&settings(&iaas)).unwrap();
        let mut keys = vec![];
        flatten("", &doc, &mut keys);
        assert!(!keys.is_empty());
        for key in keys {
            assert!(
                known.contains(&key),
                "{iaas}.json: {key} is not in the agent's list"
            );
        }
    }
}

#[test]
fn each_iaas_reads_its_settings_where_the_reference_has_them() {
    let types = |iaas: &str| -> Vec<String> {
        let doc: serde_json::Value = serde_json::from_str(&settings(iaas)).unwrap();
        doc["Infrastructure"]["Settings"]["Sources"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["Type"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(types("aws"), ["HTTP"]);
    assert_eq!(types("openstack"), ["File", "ConfigDrive", "HTTP"]);
    assert_eq!(types("google"), ["InstanceMetadata"]);
    assert_eq!(types("azure"), ["File"]);
    assert_eq!(types("vsphere"), ["CDROM"]);
    assert_eq!(types("warden"), ["File"]);
    let device = |iaas: &str| -> String {
        let doc: serde_json::Value = serde_json::from_str(&settings(iaas)).unwrap();
        doc["Platform"]["Linux"]["DevicePathResolutionType"]
            .as_str()
            .unwrap_or("")
            .to_string()
    };
    for (iaas, want) in [
        ("aws", "virtio"),
        ("openstack", "virtio"),
        ("google", "virtio"),
        ("azure", "scsi"),
        ("vsphere", "scsi"),
    ] {
        assert_eq!(device(iaas), want, "{iaas}");
    }
}
