//! upload-os-image and download-os-image against a real S3-compatible server on 127.0.0.1.

mod support;

use std::fs;
use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::sync::OnceLock;

use support::s3_server::{S3Server, BUCKET, READER_KEY, READER_SECRET};
use support::{noise, text};

fn server() -> &'static S3Server {
    static SERVER: OnceLock<S3Server> = OnceLock::new();
    SERVER.get_or_init(S3Server::shared)
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn head(key: &str) -> Option<aws_sdk_s3::operation::head_object::HeadObjectOutput> {
    runtime()
        .block_on(
            server()
                .client()
                .head_object()
                .bucket(BUCKET)
                .key(key)
                .send(),
        )
        .ok()
}

fn one_line_error(out: &std::process::Output) -> String {
    assert!(
        !out.status.success(),
        "expected a failure: {}",
        text(&out.stdout)
    );
    let stderr = text(&out.stderr);
    let errors: Vec<&str> = stderr.lines().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(errors.len(), 1, "{stderr}");
    errors[0].to_string()
}

#[test]
fn multipart_round_trip_with_sha256_metadata_sidecar_and_if_changed() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("os-image.tgz");
    fs::write(&file, noise(37 << 20, 1)).unwrap(); // 37 MiB: 3 parts of 16 MiB
    let url = "s3://os-images/round-trip/os-image.tgz";
    let out = server()
        .command(&["upload-os-image", file.to_str().unwrap(), url])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("part 3/3 uploaded"),
        "multipart: {}",
        text(&out.stderr)
    );
    let digest = support_sha256(&file);
    let head = head("round-trip/os-image.tgz").expect("object exists");
    assert_eq!(
        head.metadata().unwrap().get("sha256"),
        Some(&digest),
        "sha256 as metadata"
    );
    let sidecar = runtime()
        .block_on(
            server()
                .client()
                .get_object()
                .bucket(BUCKET)
                .key("round-trip/os-image.tgz.sha256")
                .send(),
        )
        .unwrap();
    let body = runtime()
        .block_on(sidecar.body.collect())
        .unwrap()
        .into_bytes();
    assert_eq!(text(&body), format!("{digest}  os-image.tgz\n"));

    let target = dir.path().join("dl/os-image.tgz");
    fs::create_dir(dir.path().join("dl")).unwrap();
    let out = server()
        .command(&["download-os-image", url, target.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(fs::read(&target).unwrap(), fs::read(&file).unwrap());
    assert_eq!(
        fs::read_to_string(dir.path().join("dl/os-image.tgz.sha256")).unwrap(),
        format!("{digest}  os-image.tgz\n")
    );

    let out = server()
        .command(&[
            "download-os-image",
            url,
            target.to_str().unwrap(),
            "--if-changed",
        ])
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(
        text(&out.stdout).contains("not downloaded"),
        "{}",
        text(&out.stdout)
    );
    fs::write(&target, b"stale").unwrap();
    let out = server()
        .command(&[
            "download-os-image",
            url,
            target.to_str().unwrap(),
            "--if-changed",
        ])
        .output()
        .unwrap();
    assert!(out.status.success());
    assert_eq!(
        fs::read(&target).unwrap(),
        fs::read(&file).unwrap(),
        "a changed file is fetched again"
    );
}

fn support_sha256(path: &std::path::Path) -> String {
    let out = std::process::Command::new("sha256sum")
        .arg(path)
        .output()
        .unwrap();
    text(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .to_string()
}

#[test]
fn small_files_go_in_one_put_and_the_sha256_object_is_a_fallback() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("small.tgz");
    fs::write(&file, noise(100_000, 2)).unwrap();
    let url = "s3://os-images/small/small.tgz";
    let out = server()
        .command(&["upload-os-image", file.to_str().unwrap(), url])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        !text(&out.stderr).contains("part 1/"),
        "no multipart for a small file"
    );
    // Re-put the object without metadata: the KEY.sha256 object still verifies it.
    runtime()
        .block_on(
            server()
                .client()
                .put_object()
                .bucket(BUCKET)
                .key("small/small.tgz")
                .body(fs::read(&file).unwrap().into())
                .send(),
        )
        .unwrap();
    let target = dir.path().join("got.tgz");
    let out = server()
        .command(&["download-os-image", url, target.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains(&support_sha256(&file)));
}

#[test]
fn checksum_mismatch_deletes_the_temp_file_and_names_both_digests() {
    let dir = tempfile::tempdir().unwrap();
    let bytes = noise(20 << 20, 3);
    let wrong = "0".repeat(64);
    runtime()
        .block_on(
            server()
                .client()
                .put_object()
                .bucket(BUCKET)
                .key("tampered/os.tgz")
                .metadata("sha256", &wrong)
                .body(bytes.clone().into())
                .send(),
        )
        .unwrap();
    let out_dir = dir.path().join("out");
    fs::create_dir(&out_dir).unwrap();
    let target = out_dir.join("os.tgz");
    let out = server()
        .command(&[
            "download-os-image",
            "s3://os-images/tampered/os.tgz",
            target.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    let err = one_line_error(&out);
    let actual = {
        use sha2::Digest;
        hex::encode(sha2::Sha256::digest(&bytes))
    };
    assert!(
        err.contains("checksum mismatch") && err.contains(&wrong) && err.contains(&actual),
        "{err}"
    );
    assert_eq!(
        fs::read_dir(&out_dir).unwrap().count(),
        0,
        "no file, no temp file left"
    );
}

#[test]
fn an_object_without_any_sha256_is_refused_unless_no_verify() {
    let dir = tempfile::tempdir().unwrap();
    runtime()
        .block_on(
            server()
                .client()
                .put_object()
                .bucket(BUCKET)
                .key("foreign/os.tgz")
                .body(b"foreign".to_vec().into())
                .send(),
        )
        .unwrap();
    let target = dir.path().join("os.tgz");
    let out = server()
        .command(&[
            "download-os-image",
            "s3://os-images/foreign/os.tgz",
            target.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(one_line_error(&out).contains("--no-verify"));
    assert!(!target.exists());
    let out = server()
        .command(&[
            "download-os-image",
            "s3://os-images/foreign/os.tgz",
            target.to_str().unwrap(),
            "--no-verify",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(fs::read(&target).unwrap(), b"foreign");
}

#[test]
fn errors_name_bucket_and_key_and_the_fix() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("f.tgz");
    fs::write(&file, b"data").unwrap();
    let target = dir.path().join("t.tgz");
    let f = file.to_str().unwrap();
    let t = target.to_str().unwrap();

    let err = one_line_error(
        &server()
            .command(&["download-os-image", "s3://os-images/missing/key.tgz", t])
            .output()
            .unwrap(),
    );
    assert!(
        err.contains("no object with key 'missing/key.tgz' in bucket 'os-images'"),
        "{err}"
    );

    let err = one_line_error(
        &server()
            .command(&["download-os-image", "s3://no-such-bucket/key.tgz", t])
            .output()
            .unwrap(),
    );
    assert!(
        err.contains("bucket 'no-such-bucket' does not exist"),
        "{err}"
    );
    let err = one_line_error(
        &server()
            .command(&["upload-os-image", f, "s3://no-such-bucket/key.tgz"])
            .output()
            .unwrap(),
    );
    assert!(
        err.contains("bucket 'no-such-bucket' does not exist"),
        "{err}"
    );

    let err = one_line_error(
        &server()
            .command(&["upload-os-image", f, "s3://os-images/x.tgz"])
            .env("AWS_SECRET_ACCESS_KEY", "wrong-secret")
            .output()
            .unwrap(),
    );
    assert!(
        err.contains("rejected the credentials")
            && err.contains("AWS_SECRET_ACCESS_KEY")
            && err.contains("s3://os-images/x.tgz"),
        "{err}"
    );
    let err = one_line_error(
        &server()
            .command(&["download-os-image", "s3://os-images/x.tgz", t])
            .env("AWS_ACCESS_KEY_ID", "nobody")
            .output()
            .unwrap(),
    );
    assert!(err.contains("rejected the credentials"), "{err}");

    let denied = server()
        .command(&["upload-os-image", f, "s3://os-images/denied.tgz"])
        .env("AWS_ACCESS_KEY_ID", READER_KEY)
        .env("AWS_SECRET_ACCESS_KEY", READER_SECRET)
        .output()
        .unwrap();
    let err = one_line_error(&denied);
    assert!(
        err.contains("access denied to bucket 'os-images', key 'denied.tgz'"),
        "{err}"
    );

    let mut unreachable = std::process::Command::new(support::bin());
    unreachable
        .args([
            "download-os-image",
            "s3://os-images/x.tgz",
            t,
            "--endpoint",
            "http://127.0.0.1:9",
            "--path-style",
        ])
        .env("AWS_ACCESS_KEY_ID", "a")
        .env("AWS_SECRET_ACCESS_KEY", "b")
        .env("AWS_REGION", "us-east-1");
    let err = one_line_error(&unreachable.output().unwrap());
    assert!(
        err.contains("cannot reach the S3 endpoint http://127.0.0.1:9"),
        "{err}"
    );

    let err = one_line_error(
        &server()
            .command(&["upload-os-image", f, "os-images/x.tgz"])
            .output()
            .unwrap(),
    );
    assert!(err.contains("write s3://BUCKET/KEY"), "{err}");
    assert!(!target.exists());
}

#[test]
fn when_required_checksums_work_too() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("os.tgz");
    fs::write(&file, noise(18 << 20, 4)).unwrap();
    let url = "s3://os-images/when-required/os.tgz";
    let out = server()
        .command(&[
            "upload-os-image",
            file.to_str().unwrap(),
            url,
            "--checksums",
            "when-required",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let target = dir.path().join("back.tgz");
    let out = server()
        .command(&[
            "download-os-image",
            url,
            target.to_str().unwrap(),
            "--checksums",
            "when-required",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(fs::read(&target).unwrap(), fs::read(&file).unwrap());
}

#[test]
fn killing_the_server_mid_upload_leaves_no_object_and_no_parts() {
    let mut own = S3Server::start(); // this test kills its server: not the shared one
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("big.tgz");
    fs::write(&file, noise(200 << 20, 5)).unwrap();
    let mut upload = own
        .command(&[
            "upload-os-image",
            file.to_str().unwrap(),
            "s3://os-images/killed/os.tgz",
            "--part-size-mib",
            "5",
            "--concurrency",
            "1",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(upload.stderr.take().unwrap()).lines();
    let mut log = String::new();
    for line in lines.by_ref() {
        let line = line.unwrap();
        log.push_str(&line);
        log.push('\n');
        if line.contains("part ") && line.contains(" uploaded") {
            break;
        }
    }
    assert!(log.contains("part "), "upload started: {log}");
    own.kill();
    for line in lines.by_ref() {
        let line = line.unwrap();
        log.push_str(&line);
        log.push('\n');
        if line.contains("aborting multipart upload") {
            break;
        }
    }
    assert!(log.contains("aborting multipart upload"), "{log}");
    own.restart(); // the abort is retried until the store is back
    for line in lines {
        log.push_str(&line.unwrap());
        log.push('\n');
    }
    eprintln!("{log}");
    let status = upload.wait().unwrap();
    assert!(!status.success(), "{log}");
    assert!(log.contains("error:"), "{log}");

    let client = own.client();
    let rt = runtime();
    assert!(
        rt.block_on(
            client
                .head_object()
                .bucket(BUCKET)
                .key("killed/os.tgz")
                .send()
        )
        .is_err(),
        "no object under the final key"
    );
    let uploads = rt
        .block_on(client.list_multipart_uploads().bucket(BUCKET).send())
        .unwrap();
    assert!(
        uploads.uploads().is_empty(),
        "orphaned multipart uploads: {:?}",
        uploads.uploads()
    );
}

/// Starts a one-part-at-a-time upload of `file` to `key` and SIGKILLs it once a part is up.
fn kill_mid_upload(server: &S3Server, file: &std::path::Path, key: &str, state: &std::path::Path) {
    let url = format!("s3://{BUCKET}/{key}");
    let mut upload = server
        .command(&[
            "upload-os-image",
            file.to_str().unwrap(),
            &url,
            "--part-size-mib",
            "5",
            "--concurrency",
            "1",
        ])
        .env("STEMCELL_BUILDER_STATE_DIR", state)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let lines = BufReader::new(upload.stderr.take().unwrap()).lines();
    let mut log = String::new();
    for line in lines {
        let line = line.unwrap();
        log.push_str(&line);
        log.push('\n');
        if line.contains("part ") && line.contains(" uploaded") {
            break;
        }
    }
    assert!(log.contains(" uploaded"), "upload started: {log}");
    upload.kill().unwrap(); // SIGKILL: no chance to abort
    upload.wait().unwrap();
}

fn open_uploads(key: &str) -> Vec<String> {
    let listing = runtime()
        .block_on(
            server()
                .client()
                .list_multipart_uploads()
                .bucket(BUCKET)
                .prefix(key)
                .send(),
        )
        .unwrap();
    listing
        .uploads()
        .iter()
        .filter(|u| u.key() == Some(key))
        .filter_map(|u| u.upload_id().map(str::to_string))
        .collect()
}

#[test]
fn an_upload_aborts_what_a_killed_run_of_ours_left_open_and_nothing_else() {
    let key = "sweep/os-image.tgz";
    // Another job's upload to the same key, live while ours runs: never ours to abort.
    let other = runtime()
        .block_on(
            server()
                .client()
                .create_multipart_upload()
                .bucket(BUCKET)
                .key(key)
                .send(),
        )
        .unwrap()
        .upload_id()
        .unwrap()
        .to_string();

    let dir = tempfile::tempdir().unwrap();
    let big = dir.path().join("big.tgz");
    fs::write(&big, noise(120 << 20, 11)).unwrap();
    // This test's own state dir: other tests' uploads in flight record into the shared one.
    let state = dir.path().join("state");
    kill_mid_upload(server(), &big, key, &state);
    let records = state.join("multipart");
    let left: Vec<_> = fs::read_dir(&records).unwrap().flatten().collect();
    assert_eq!(left.len(), 1, "the killed upload is recorded");
    let killed: Vec<String> = open_uploads(key)
        .into_iter()
        .filter(|id| *id != other)
        .collect();
    assert_eq!(killed.len(), 1, "the killed upload is still open");

    let file = dir.path().join("os-image.tgz");
    fs::write(&file, noise(12 << 20, 12)).unwrap(); // multipart: 3 parts of 5 MiB
    let out = server()
        .command(&[
            "upload-os-image",
            file.to_str().unwrap(),
            &format!("s3://{BUCKET}/{key}"),
            "--part-size-mib",
            "5",
        ])
        .env("STEMCELL_BUILDER_STATE_DIR", &state)
        .output()
        .unwrap();
    let stderr = text(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains(&format!("aborted multipart upload {}", killed[0])),
        "{stderr}"
    );
    assert_eq!(
        open_uploads(key),
        vec![other.clone()],
        "only the other job's upload is left open"
    );
    assert_eq!(
        fs::read_dir(&records).unwrap().count(),
        0,
        "no record is left once uploads finish or are aborted"
    );
    runtime()
        .block_on(
            server()
                .client()
                .abort_multipart_upload()
                .bucket(BUCKET)
                .key(key)
                .upload_id(&other)
                .send(),
        )
        .unwrap();
}
