//! The BOSH agent's settings file (`/var/vcap/bosh/agent.json`, read with `-C`) checked against
//! the agent's own structures, so a key the agent would silently ignore (Go's JSON decoder and
//! mapstructure drop unknown keys) is caught at build time instead of on a VM that never finds
//! its settings.
//!
//! The structure is taken from the public cloudfoundry/bosh-agent source (read at commit
//! e94765aa1): `app/config.go` (`Config{Platform, Infrastructure}`), `platform/provider.go`
//! (`Options{Linux, Windows}`), `platform/linux_platform.go` (`LinuxOptions`),
//! `platform/windows_platform.go` (`WindowsOptions`) and
//! `infrastructure/settings_source_factory.go` (`Options{Settings{Sources}}`, the source types
//! by their `Type` and each one's options). `UseRegistry`, `UseServerName` (dropped by the agent
//! in 2022, "drop registry references") and `VirtioDevicePrefix` are no longer fields there.
//!
//! Stricter than the agent on purpose: keys must be spelt as the agent's fields are (Go matches
//! them case-insensitively), `null` is refused, and a stemcell must name at least one settings
//! source (without one the agent has nowhere to read its settings from).

use serde_json::Value;

/// The type of one field, as the agent's Go structure declares it.
#[derive(Debug, Clone, Copy)]
enum Ty {
    Bool,
    Str,
    StrList,
    StrMap,
    Object(&'static [(&'static str, Ty)]),
    Sources,
}

/// `platform.LinuxOptions`.
const LINUX_OPTIONS: &[(&str, Ty)] = &[
    ("UseDefaultTmpDir", Ty::Bool),
    ("UsePreformattedPersistentDisk", Ty::Bool),
    ("BindMountPersistentDisk", Ty::Bool),
    ("CreatePartitionIfNoEphemeralDisk", Ty::Bool),
    ("SkipDiskSetup", Ty::Bool),
    ("DevicePathResolutionType", Ty::Str),
    ("InstanceStorageManagedVolumePattern", Ty::Str),
    ("InstanceStorageDevicePattern", Ty::Str),
    ("PartitionerType", Ty::Str),
    ("ServiceManager", Ty::Str),
    ("DiskIDTransformPattern", Ty::Str),
    ("DiskIDTransformReplacement", Ty::Str),
    ("LunDeviceSymlinkPath", Ty::Str),
    ("UseMonitIptablesFirewall", Ty::Bool),
];

/// `platform.WindowsOptions`.
const WINDOWS_OPTIONS: &[(&str, Ty)] = &[("EnableEphemeralDiskMounting", Ty::Bool)];

/// `app.Config`.
const CONFIG: &[(&str, Ty)] = &[
    (
        "Platform",
        Ty::Object(&[
            ("Linux", Ty::Object(LINUX_OPTIONS)),
            ("Windows", Ty::Object(WINDOWS_OPTIONS)),
        ]),
    ),
    (
        "Infrastructure",
        Ty::Object(&[("Settings", Ty::Object(&[("Sources", Ty::Sources)]))]),
    ),
];

/// The settings sources by their `Type`, each with its options struct's fields.
const SOURCES: &[(&str, &[(&str, Ty)])] = &[
    (
        "HTTP",
        &[
            ("URI", Ty::Str),
            ("Headers", Ty::StrMap),
            ("UserDataPath", Ty::Str),
            ("InstanceIDPath", Ty::Str),
            ("SSHKeysPath", Ty::Str),
            ("TokenPath", Ty::Str),
        ],
    ),
    (
        "InstanceMetadata",
        &[
            ("URI", Ty::Str),
            ("Headers", Ty::StrMap),
            ("SettingsPath", Ty::Str),
        ],
    ),
    (
        "ConfigDrive",
        &[
            ("DiskPaths", Ty::StrList),
            ("MetaDataPath", Ty::Str),
            ("UserDataPath", Ty::Str),
            ("SettingsPath", Ty::Str),
        ],
    ),
    (
        "File",
        &[
            ("MetaDataPath", Ty::Str),
            ("UserDataPath", Ty::Str),
            ("SettingsPath", Ty::Str),
        ],
    ),
    ("CDROM", &[("FileName", Ty::Str)]),
    (
        "VsphereGuestInfo",
        &[("RpcToolPath", Ty::Str), ("VmToolsdPath", Ty::Str)],
    ),
];

/// Every key path the agent reads (`Platform.Linux.PartitionerType`,
/// `Infrastructure.Settings.Sources[HTTP].URI`, ...), for documentation and tests.
pub fn known_keys() -> Vec<String> {
    fn walk(prefix: &str, fields: &[(&str, Ty)], out: &mut Vec<String>) {
        for (name, ty) in fields {
            let path = if prefix.is_empty() {
                name.to_string()
            } else {
                format!("{prefix}.{name}")
            };
            match ty {
                Ty::Object(inner) => walk(&path, inner, out),
                Ty::Sources => {
                    for (kind, fields) in SOURCES {
                        out.push(format!("{path}[{kind}].Type"));
                        walk(&format!("{path}[{kind}]"), fields, out);
                    }
                }
                _ => out.push(path),
            }
        }
    }
    let mut out = vec![];
    walk("", CONFIG, &mut out);
    out
}

/// Checks an agent.json's text; the error names the key path and what is wrong with it.
pub fn validate(text: &str) -> Result<(), String> {
    let value: Value =
        serde_json::from_str(text).map_err(|e| format!("agent.json is not JSON: {e}"))?;
    check(&value, "", Ty::Object(CONFIG))?;
    let sources = value
        .pointer("/Infrastructure/Settings/Sources")
        .and_then(Value::as_array);
    if sources.is_none_or(|s| s.is_empty()) {
        return Err(
            "Infrastructure.Settings.Sources is missing or empty: the agent would have nowhere to read its settings from"
                .into(),
        );
    }
    Ok(())
}

fn name(path: &str) -> &str {
    if path.is_empty() {
        "the top level"
    } else {
        path
    }
}

fn check(value: &Value, path: &str, ty: Ty) -> Result<(), String> {
    let wrong = |want: &str| Err(format!("{} must be {want}, not {value}", name(path)));
    match ty {
        Ty::Bool if value.is_boolean() => Ok(()),
        Ty::Bool => wrong("true or false"),
        Ty::Str if value.is_string() => Ok(()),
        Ty::Str => wrong("a string"),
        Ty::StrList => match value.as_array() {
            Some(items) if items.iter().all(Value::is_string) => Ok(()),
            _ => wrong("a list of strings"),
        },
        Ty::StrMap => match value.as_object() {
            Some(map) if map.values().all(Value::is_string) => Ok(()),
            _ => wrong("an object of strings"),
        },
        Ty::Object(fields) => {
            let Some(map) = value.as_object() else {
                return wrong("an object");
            };
            fields_of(map, path, fields)
        }
        Ty::Sources => {
            let Some(items) = value.as_array() else {
                return wrong("a list of settings sources");
            };
            for (i, item) in items.iter().enumerate() {
                let at = format!("{path}[{i}]");
                let Some(map) = item.as_object() else {
                    return Err(format!("{at} must be an object, not {item}"));
                };
                let kinds = || {
                    SOURCES
                        .iter()
                        .map(|(k, _)| *k)
                        .collect::<Vec<_>>()
                        .join(", ")
                };
                let kind = match map.get("Type") {
                    Some(Value::String(kind)) => kind,
                    _ => return Err(format!("{at}.Type is missing: it is one of {}", kinds())),
                };
                let Some((_, fields)) = SOURCES.iter().find(|(k, _)| k == kind) else {
                    return Err(format!(
                        "{at}.Type '{kind}' is not a settings source of the agent: use one of {}",
                        kinds()
                    ));
                };
                let rest: serde_json::Map<String, Value> = map
                    .iter()
                    .filter(|(k, _)| k.as_str() != "Type")
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect();
                fields_of(&rest, &format!("{at}({kind})"), fields)?;
            }
            Ok(())
        }
    }
}

fn fields_of(
    map: &serde_json::Map<String, Value>,
    path: &str,
    fields: &[(&str, Ty)],
) -> Result<(), String> {
    for (key, value) in map {
        let at = if path.is_empty() {
            key.clone()
        } else {
            format!("{path}.{key}")
        };
        let Some((_, ty)) = fields.iter().find(|(k, _)| k == key) else {
            let known: Vec<&str> = fields.iter().map(|(k, _)| *k).collect();
            return Err(format!(
                "{at} is not a key of the agent's settings (it would be ignored): {} takes {}",
                name(path),
                known.join(", ")
            ));
        };
        check(value, &at, *ty)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"{"Platform":{"Linux":{"PartitionerType":"parted","CreatePartitionIfNoEphemeralDisk":true}},
        "Infrastructure":{"Settings":{"Sources":[{"Type":"CDROM","FileName":"env"},
        {"Type":"HTTP","URI":"http://169.254.169.254","Headers":{"a":"b"}}]}}}"#;

    #[test]
    fn a_settings_file_the_agent_reads_in_full_passes() {
        validate(GOOD).unwrap();
    }

    #[test]
    fn unknown_keys_are_named_with_their_path() {
        let err = validate(&GOOD.replace("\"Settings\":{", "\"Settings\":{\"UseRegistry\":true,"))
            .unwrap_err();
        assert!(
            err.starts_with("Infrastructure.Settings.UseRegistry is not a key"),
            "{err}"
        );
        let err = validate(&GOOD.replace("\"FileName\"", "\"Filename\"")).unwrap_err();
        assert!(
            err.starts_with("Infrastructure.Settings.Sources[0](CDROM).Filename"),
            "{err}"
        );
        let err = validate(&GOOD.replace(
            "\"Linux\":{",
            "\"Linux\":{\"VirtioDevicePrefix\":\"google\",",
        ))
        .unwrap_err();
        assert!(err.contains("Platform.Linux.VirtioDevicePrefix"), "{err}");
    }

    #[test]
    fn wrong_types_and_source_types_are_refused() {
        let err = validate(&GOOD.replace(
            "\"CreatePartitionIfNoEphemeralDisk\":true",
            "\"CreatePartitionIfNoEphemeralDisk\":\"true\"",
        ))
        .unwrap_err();
        assert!(err.contains("must be true or false"), "{err}");
        let err = validate(&GOOD.replace("\"CDROM\"", "\"Cdrom\"")).unwrap_err();
        assert!(err.contains("'Cdrom' is not a settings source"), "{err}");
        let err = validate(&GOOD.replace("{\"a\":\"b\"}", "{\"a\":1}")).unwrap_err();
        assert!(err.contains("an object of strings"), "{err}");
        let err = validate(r#"{"Infrastructure":{"Settings":{"Sources":[]}}}"#).unwrap_err();
        assert!(err.contains("nowhere to read"), "{err}");
        assert!(validate("{").unwrap_err().contains("not JSON"));
    }

    #[test]
    fn known_keys_list_every_source_option() {
        let keys = known_keys();
        assert!(keys.contains(&"Platform.Linux.PartitionerType".to_string()));
        assert!(keys.contains(&"Infrastructure.Settings.Sources[CDROM].FileName".to_string()));
        assert!(!keys.iter().any(|k| k.contains("UseRegistry")));
    }
}
