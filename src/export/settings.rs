//! What a container made from the export runs with: environment, user, command, working
//! directory. Checked before anything is read (`--env` without `=`, a relative `--workdir`),
//! and the user against the tree's own passwd and group once the stream has shown them.

use anyhow::{bail, Result};

/// Docker's, podman's and buildah's default when an image sets no PATH.
pub const DEFAULT_PATH: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImageSettings {
    /// `KEY=VALUE`, in the order given; PATH first when it was not given.
    pub env: Vec<String>,
    /// `NAME`, `UID`, `NAME:GROUP` or `UID:GID`.
    pub user: Option<String>,
    pub entrypoint: Option<Vec<String>>,
    pub cmd: Option<Vec<String>>,
    pub workdir: Option<String>,
}

impl ImageSettings {
    /// From the flags' text; every problem is one line naming the flag.
    pub fn parse(
        env: &[String],
        user: Option<&str>,
        entrypoint: Option<&str>,
        cmd: Option<&str>,
        workdir: Option<&str>,
    ) -> Result<Self> {
        let mut out = ImageSettings::default();
        for pair in env {
            match pair.split_once('=') {
                Some((key, _)) if valid_key(key) => out.env.push(pair.clone()),
                Some((key, _)) => bail!(
                    "--env {pair}: '{key}' is not a variable name (letters, digits, _; not starting with a digit)"
                ),
                None => bail!("--env {pair}: write KEY=VALUE, e.g. --env {pair}=value"),
            }
        }
        if !out.env.iter().any(|e| e.starts_with("PATH=")) {
            out.env.insert(0, DEFAULT_PATH.to_string());
        }
        if let Some(user) = user {
            let name = user.split(':').next().unwrap_or_default();
            if name.is_empty() || user.ends_with(':') || user.chars().any(char::is_whitespace) {
                bail!("--user {user:?}: write NAME, UID, NAME:GROUP or UID:GID");
            }
            out.user = Some(user.to_string());
        }
        out.entrypoint = entrypoint.map(|t| words("--entrypoint", t)).transpose()?;
        out.cmd = cmd.map(|t| words("--cmd", t)).transpose()?;
        if let Some(dir) = workdir {
            if !dir.starts_with('/') {
                bail!("--workdir {dir}: give an absolute path, e.g. /home/vcap");
            }
            out.workdir = Some(dir.to_string());
        }
        Ok(out)
    }

    /// Fails when `--user` names a user or group the tree's passwd/group do not have.
    pub fn check_user(&self, passwd: Option<&[u8]>, group: Option<&[u8]>) -> Result<()> {
        let Some(user) = &self.user else {
            return Ok(());
        };
        let (name, group_name) = user.split_once(':').unwrap_or((user, ""));
        let numeric = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
        if !numeric(name) && !has_entry(passwd, name) {
            bail!(
                "--user {user}: the OS image's /etc/passwd has no user '{name}': create it in a stage, or pass a numeric UID"
            );
        }
        if !group_name.is_empty() && !numeric(group_name) && !has_entry(group, group_name) {
            bail!(
                "--user {user}: the OS image's /etc/group has no group '{group_name}': create it in a stage, or pass a numeric GID"
            );
        }
        Ok(())
    }
}

fn valid_key(key: &str) -> bool {
    let mut bytes = key.bytes();
    matches!(bytes.next(), Some(b) if b.is_ascii_alphabetic() || b == b'_')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

fn words(flag: &str, text: &str) -> Result<Vec<String>> {
    let words = shell_words::split(text)
        .map_err(|e| anyhow::anyhow!("{flag} {text:?}: {e}: quote it as a shell would"))?;
    if words.is_empty() {
        bail!("{flag} is empty: give a command, e.g. {flag} '/bin/sh -c \"echo hi\"'");
    }
    Ok(words)
}

fn has_entry(file: Option<&[u8]>, name: &str) -> bool {
    file.map(String::from_utf8_lossy).is_some_and(|text| {
        text.lines()
            .any(|line| line.split(':').next() == Some(name))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_needs_an_equals_sign_and_path_is_defaulted() {
        let err = ImageSettings::parse(&["FOO".into()], None, None, None, None).unwrap_err();
        assert_eq!(
            err.to_string(),
            "--env FOO: write KEY=VALUE, e.g. --env FOO=value"
        );
        assert!(ImageSettings::parse(&["1X=a".into()], None, None, None, None).is_err());
        let s = ImageSettings::parse(&["LANG=C.UTF-8".into()], None, None, None, None).unwrap();
        assert_eq!(s.env, vec![DEFAULT_PATH.to_string(), "LANG=C.UTF-8".into()]);
        let s = ImageSettings::parse(&["PATH=/bin".into()], None, None, None, None).unwrap();
        assert_eq!(s.env, vec!["PATH=/bin".to_string()]);
    }

    #[test]
    fn commands_are_split_as_a_shell_would() {
        let s = ImageSettings::parse(&[], None, None, Some("/bin/sh -c 'echo a b'"), Some("/"))
            .unwrap();
        assert_eq!(s.cmd.unwrap(), vec!["/bin/sh", "-c", "echo a b"]);
        assert!(ImageSettings::parse(&[], None, None, Some("'open"), None).is_err());
        assert!(ImageSettings::parse(&[], None, None, None, Some("rel")).is_err());
    }

    #[test]
    fn the_user_must_exist_in_the_tree() {
        let passwd = b"root:x:0:0::/root:/bin/sh\nvcap:x:1000:1000::/home/vcap:/bin/bash\n";
        let group = b"root:x:0:\nvcap:x:1000:\n";
        let check = |user: &str| {
            ImageSettings::parse(&[], Some(user), None, None, None)
                .and_then(|s| s.check_user(Some(passwd), Some(group)))
        };
        assert!(check("vcap").is_ok());
        assert!(check("vcap:vcap").is_ok());
        assert!(check("4242:4242").is_ok());
        assert!(check("nobody")
            .unwrap_err()
            .to_string()
            .contains("no user 'nobody'"));
        assert!(check("vcap:wheel")
            .unwrap_err()
            .to_string()
            .contains("no group 'wheel'"));
        assert!(check("vcap:").is_err());
    }
}
