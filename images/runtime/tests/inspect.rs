//! `kiln-runtime inspect`, as the operator's check of a ModelPackage runs
//! it: on the pod's filesystem (`file://`, what a `pvc://` artifact is
//! mounted as) and against a real S3-compatible store (SeaweedFS on
//! loopback), for a `model.tar.gz`, a prefix, a missing artifact, one
//! without `model.json`, a broken archive and refused credentials. The
//! digests are checked against `sha256sum` and against what `push` reported
//! for the same model.

mod common;

use std::path::Path;
use std::process::Command;

use common::s3::S3;

/// What one command left behind.
#[derive(Debug)]
struct Run {
    code: i32,
    stdout: String,
    stderr: String,
    /// The termination message file.
    message: Option<String>,
}

fn run_with(env: &[(String, String)], args: &[&str]) -> Run {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_kiln-runtime"))
        .args(args)
        .arg("--termination-message")
        .arg(dir.path().join("termination-message"))
        .envs(env.iter().cloned())
        .output()
        .unwrap();
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into(),
        stderr: String::from_utf8_lossy(&out.stderr).into(),
        message: std::fs::read_to_string(dir.path().join("termination-message")).ok(),
    }
}

/// `kiln-runtime inspect --uri URI` plus `extra`; the report when it
/// succeeds (it is stdout and the termination message both).
fn inspect(env: &[(String, String)], uri: &str, extra: &[&str]) -> Run {
    let mut args = vec!["inspect", "--uri", uri];
    args.extend_from_slice(extra);
    run_with(env, &args)
}

fn report(run: &Run) -> serde_json::Value {
    assert_eq!(run.code, 0, "{run:#?}");
    let message = run.message.clone().unwrap();
    assert_eq!(run.stdout.trim(), message.trim(), "{run:#?}");
    serde_json::from_str(&message).unwrap()
}

/// Asserts a failure with `code` whose termination message holds `text`.
fn failed(run: &Run, code: i32, text: &str) {
    assert_eq!(run.code, code, "{run:#?}");
    let message = run.message.clone().unwrap_or_default();
    assert!(message.contains(text), "{text:?} not in {run:#?}");
    assert!(run.stderr.contains(text), "{run:#?}");
}

/// The SHA-256 `sha256sum` prints for a file.
fn sha256sum(path: &Path) -> String {
    let out = Command::new("sha256sum").arg(path).output().unwrap();
    assert!(out.status.success());
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .to_string()
}

/// The digest of a folder: SHA-256 of `sha256sum`'s lines for its files,
/// sorted by relative path.
fn manifest_sha256(dir: &Path, names: &[&str]) -> String {
    let mut names = names.to_vec();
    names.sort();
    let manifest: String = names
        .iter()
        .map(|n| format!("{}  {n}\n", sha256sum(&dir.join(n))))
        .collect();
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), manifest).unwrap();
    sha256sum(file.path())
}

/// A built-in's model folder: model.json, tensors, and a file in a subfolder.
fn model_folder(algorithm: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let json =
        format!(r#"{{"format": "kiln-model", "format_version": 1, "algorithm": "{algorithm}"}}"#);
    std::fs::write(dir.path().join("model.json"), json).unwrap();
    let tensors: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 251) as u8).collect();
    std::fs::write(dir.path().join("model.safetensors"), tensors).unwrap();
    std::fs::create_dir_all(dir.path().join("code")).unwrap();
    std::fs::write(dir.path().join("code/inference.py"), b"print('hi')\n").unwrap();
    dir
}

const MODEL_FILES: [&str; 3] = ["code/inference.py", "model.json", "model.safetensors"];

/// `tar czf` of `dir`'s contents, as other tools make archives (`./` names).
fn tar_gz(dir: &Path, archive: &Path) {
    let status = Command::new("tar")
        .arg("czf")
        .arg(archive)
        .arg("-C")
        .arg(dir)
        .arg(".")
        .status()
        .unwrap();
    assert!(status.success());
}

#[test]
fn inspect_reads_local_archives_and_folders() {
    let none: &[(String, String)] = &[];
    let model = model_folder("linear-learner");
    let scratch = tempfile::tempdir().unwrap();

    // A folder: the sha256sum manifest's digest, model.json's algorithm.
    let uri = format!("file://{}", model.path().display());
    let folder = report(&inspect(none, &uri, &[]));
    assert_eq!(folder["layout"], "Prefix");
    assert_eq!(folder["objects"], 3);
    assert_eq!(folder["algorithm"], "linear-learner");
    assert_eq!(folder["modelJson"], "model.json");
    assert_eq!(
        folder["sha256"],
        manifest_sha256(model.path(), &MODEL_FILES)
    );
    let size: u64 = MODEL_FILES
        .iter()
        .map(|n| std::fs::metadata(model.path().join(n)).unwrap().len())
        .sum();
    assert_eq!(folder["size"], size);
    // A plain path is the same artifact.
    let plain = report(&inspect(none, model.path().to_str().unwrap(), &[]));
    assert_eq!(plain["sha256"], folder["sha256"]);

    // A .tar.gz made by tar (entries named ./...): the archive's bytes.
    let archive = scratch.path().join("model.tar.gz");
    tar_gz(model.path(), &archive);
    let packed = report(&inspect(
        none,
        &format!("file://{}", archive.display()),
        &[],
    ));
    assert_eq!(packed["layout"], "Archive");
    assert_eq!(packed["sha256"], sha256sum(&archive));
    assert_eq!(packed["size"], std::fs::metadata(&archive).unwrap().len());
    assert_eq!(packed["algorithm"], "linear-learner");
    assert_eq!(packed["modelJson"], "model.json");

    // A training job's output layout: model.json in model/.
    let nested = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(nested.path().join("model")).unwrap();
    for name in ["model.json", "model.safetensors"] {
        std::fs::copy(
            model.path().join(name),
            nested.path().join("model").join(name),
        )
        .unwrap();
    }
    let nested_archive = scratch.path().join("nested.tgz");
    tar_gz(nested.path(), &nested_archive);
    let inner = report(&inspect(none, nested_archive.to_str().unwrap(), &[]));
    assert_eq!(inner["modelJson"], "model/model.json");
    assert_eq!(inner["algorithm"], "linear-learner");

    // Nothing there: exit 3.
    let missing = format!("file://{}/nope/model.tar.gz", scratch.path().display());
    failed(&inspect(none, &missing, &[]), 3, "nothing there");
    let empty = tempfile::tempdir().unwrap();
    failed(
        &inspect(none, empty.path().to_str().unwrap(), &[]),
        3,
        "holds no file",
    );

    // No model.json: no Kiln model (exit 2), but fine for your own image.
    std::fs::remove_file(model.path().join("model.json")).unwrap();
    failed(&inspect(none, &uri, &[]), 2, "no model.json");
    let any = report(&inspect(none, &uri, &["--format", "any"]));
    assert_eq!(any["objects"], 2);
    assert!(any.get("algorithm").is_none(), "{any}");

    // A broken archive and an unreadable model.json: exit 2, saying which.
    let broken = scratch.path().join("broken.tar.gz");
    let bytes = std::fs::read(&archive).unwrap();
    std::fs::write(&broken, &bytes[..bytes.len() / 2]).unwrap();
    failed(
        &inspect(none, broken.to_str().unwrap(), &[]),
        2,
        "not a usable .tar.gz",
    );
    std::fs::write(model.path().join("model.json"), b"{not json").unwrap();
    failed(
        &inspect(none, &uri, &[]),
        2,
        "model.json: not readable as JSON",
    );

    // One file that is no archive: only with --format any.
    let single = model.path().join("model.safetensors");
    failed(
        &inspect(none, single.to_str().unwrap(), &[]),
        2,
        "one object that is not a .tar.gz",
    );
    let object = report(&inspect(
        none,
        single.to_str().unwrap(),
        &["--format", "any"],
    ));
    assert_eq!(object["layout"], "Object");
    assert_eq!(object["sha256"], sha256sum(&single));

    // pvc:// is mounted by the operator, never read as a URI.
    failed(
        &inspect(none, "pvc://claim/model", &[]),
        2,
        "pvc:// is not read here",
    );
}

#[test]
fn inspect_reads_what_push_uploaded_to_s3() {
    let s3 = S3::start();
    let env = s3.env();
    let model = model_folder("kmeans");
    let from = model.path().to_str().unwrap();

    // model.tar.gz: the digest and size push reported.
    let pushed = report(&run_with(
        &env,
        &["push", "--from", from, "--to", &s3.uri("jobs/j1/output")],
    ));
    let archive_uri = pushed["modelArtifactUri"].as_str().unwrap();
    let archive = report(&inspect(&env, archive_uri, &[]));
    assert_eq!(archive["layout"], "Archive");
    assert_eq!(archive["sha256"], pushed["sha256"]);
    assert_eq!(archive["size"], pushed["bytes"]);
    assert_eq!(archive["algorithm"], "kmeans");
    assert_eq!(archive["uri"], archive_uri);

    // A prefix (push --compression none): the digest of its manifest, the
    // one push reported and sha256sum gives.
    let plain = report(&run_with(
        &env,
        &[
            "push",
            "--from",
            from,
            "--to",
            &s3.uri("jobs/j2/model"),
            "--compression",
            "none",
        ],
    ));
    let prefix = report(&inspect(&env, &s3.uri("jobs/j2/model/"), &[]));
    assert_eq!(prefix["layout"], "Prefix");
    assert_eq!(prefix["sha256"], plain["sha256"]);
    assert_eq!(
        prefix["sha256"],
        manifest_sha256(model.path(), &MODEL_FILES)
    );
    assert_eq!(prefix["objects"], 3);
    assert_eq!(prefix["size"], plain["bytes"]);
    assert_eq!(prefix["algorithm"], "kmeans");
    // Without the trailing slash it is the same prefix.
    let again = report(&inspect(&env, &s3.uri("jobs/j2/model"), &[]));
    assert_eq!(again["sha256"], prefix["sha256"]);

    // A model changed in place: another digest.
    s3.put("jobs/j2/model/model.safetensors", b"other weights".to_vec());
    let changed = report(&inspect(&env, &s3.uri("jobs/j2/model/"), &[]));
    assert_ne!(changed["sha256"], prefix["sha256"]);

    // Nothing at the URI: exit 3 with the URI in the message.
    let missing = s3.uri("jobs/nope/model.tar.gz");
    failed(
        &inspect(&env, &missing, &[]),
        3,
        &format!("{missing}: nothing there"),
    );

    // A prefix without model.json: exit 2, or a report with --format any.
    s3.put("byoc/weights.bin", vec![7; 1000]);
    s3.put("byoc/config.yaml", b"layers: 3\n".to_vec());
    failed(&inspect(&env, &s3.uri("byoc/"), &[]), 2, "no model.json");
    let byoc = report(&inspect(&env, &s3.uri("byoc/"), &["--format", "any"]));
    assert_eq!(byoc["objects"], 2);
    assert_eq!(byoc["size"], 1010);

    // A broken archive: exit 2.
    s3.put("broken/model.tar.gz", b"\x1f\x8b not really gzip".to_vec());
    failed(
        &inspect(&env, &s3.uri("broken/model.tar.gz"), &[]),
        2,
        "not a usable .tar.gz",
    );

    // Refused credentials: exit 1 (the check is tried again), no secret in
    // the message.
    let mut wrong = env.clone();
    for (k, v) in &mut wrong {
        if k == "AWS_SECRET_ACCESS_KEY" {
            *v = "not-the-secret".into();
        }
    }
    let denied = inspect(&wrong, archive_uri, &[]);
    assert_eq!(denied.code, 1, "{denied:#?}");
    let message = denied.message.unwrap_or_default();
    assert!(!message.contains("not-the-secret"), "{message}");
    assert!(message.contains(archive_uri), "{message}");
}
