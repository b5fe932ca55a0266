//! `kiln-runtime fetch`, `push` and `sync` against a real S3-compatible
//! store (SeaweedFS on loopback), run as the operator's init containers,
//! main container and sidecar run them: sharded fetches that cover every
//! object once, a pushed model fetched back with its archive's SHA-256
//! checked, and checkpoints synced while training and on SIGTERM.

mod common;

use std::collections::BTreeMap;
use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::s3::S3;
use kiln_runtime::storage;

/// What one command left behind.
#[derive(Debug)]
struct Run {
    code: i32,
    stdout: String,
    stderr: String,
    /// The termination message file.
    message: Option<String>,
}

/// The kiln-runtime command `args` with the store's credentials and a
/// termination message file of its own.
fn command(s3: &S3, dir: &Path, args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_kiln-runtime"));
    cmd.args(args)
        .arg("--termination-message")
        .arg(dir.join("termination-message"))
        .envs(s3.env());
    cmd
}

fn run(s3: &S3, args: &[&str]) -> Run {
    let dir = tempfile::tempdir().unwrap();
    let out = command(s3, dir.path(), args).output().unwrap();
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into(),
        stderr: String::from_utf8_lossy(&out.stderr).into(),
        message: std::fs::read_to_string(dir.path().join("termination-message")).ok(),
    }
}

fn ok(run: Run) -> Run {
    assert_eq!(run.code, 0, "{run:#?}");
    run
}

/// Every file under `dir` by relative path, with its contents.
fn files(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else {
                let name = storage::relative_name(dir, &path);
                out.insert(name, std::fs::read(&path).unwrap());
            }
        }
    }
    out
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

/// Bytes that gzip cannot shrink much (a xorshift stream).
fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

fn gzip(data: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(data).unwrap();
    gz.finish().unwrap()
}

/// A folder marker object (`key` ends in `/`), as consoles create them.
fn put_marker(s3: &S3, key: &str) {
    let out = Command::new("curl")
        .args(["-fsS", "-X", "PUT", "--data-binary", "", "-o", "/dev/null"])
        .args(["--aws-sigv4", "aws:amz:us-east-1:s3"])
        .args(["--user", &format!("{}:{}", s3.access_key, s3.secret_key)])
        .arg(format!("{}/{}/{key}", s3.endpoint, s3.bucket))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The objects under `prefix`, by relative name, with their sizes.
fn listing(s3: &S3, prefix: &str) -> BTreeMap<String, u64> {
    storage::block_on(s3.remote(&s3.uri(prefix)).list_objects())
        .unwrap()
        .into_iter()
        .map(|o| (o.relative, o.size))
        .collect()
}

#[test]
fn sharded_fetches_cover_every_object_exactly_once() {
    let s3 = S3::start();
    let mut expected = BTreeMap::new();
    for (i, name) in [
        "part-0.csv",
        "part-1.csv",
        "part-2.csv",
        "part-3.csv",
        "part-4.csv",
        "sub/x.csv",
        "sub/y.csv",
    ]
    .into_iter()
    .enumerate()
    {
        let data = format!("{i},{name}\n").repeat(100 * (i + 1)).into_bytes();
        s3.put(&format!("data/{name}"), data.clone());
        expected.insert(name.to_string(), data);
    }
    s3.put("data/.hidden", b"skipped".to_vec());
    s3.put("data/sub/.meta", b"skipped".to_vec());
    put_marker(&s3, "data/empty/");
    let uri = s3.uri("data/");
    let names: Vec<&String> = expected.keys().collect();

    for seed in [None, Some("7")] {
        let mut seen = BTreeMap::new();
        for shard in ["0/2", "1/2"] {
            let dest = tempfile::tempdir().unwrap();
            let to = dest.path().join("train");
            let mut args = vec!["fetch", "--uri", &uri, "--to", to.to_str().unwrap()];
            args.extend(["--shard", shard]);
            if let Some(seed) = seed {
                args.extend(["--shuffle-seed", seed]);
            }
            let out = ok(run(&s3, &args));
            let got = files(&to);
            assert!(
                out.stdout
                    .contains(&format!("fetch: {} objects, ", got.len())),
                "{out:#?}"
            );
            assert!(out.stdout.contains(&format!("(shard {shard})")), "{out:#?}");
            if seed.is_none() {
                // ShardedByS3Key: object k of the sorted keys to shard k mod 2.
                let index: usize = shard[..1].parse().unwrap();
                let mine: Vec<&String> = names.iter().skip(index).step_by(2).copied().collect();
                assert_eq!(got.keys().collect::<Vec<_>>(), mine, "{shard}");
            }
            for (name, data) in got {
                assert_eq!(data, expected[&name], "{name}");
                assert!(seen.insert(name.clone(), shard).is_none(), "{name} twice");
            }
        }
        assert_eq!(
            seen.keys().collect::<Vec<_>>(),
            names,
            "seed {seed:?}: {seen:?}"
        );
    }
    // The same seed gives the same shards on every rank (and every run).
    let shard_of = |seed: &str| {
        let dest = tempfile::tempdir().unwrap();
        let to = dest.path().to_str().unwrap().to_string();
        ok(run(
            &s3,
            &[
                "fetch",
                "--uri",
                &uri,
                "--to",
                &to,
                "--shard",
                "0/3",
                "--shuffle-seed",
                seed,
            ],
        ));
        files(dest.path()).into_keys().collect::<Vec<_>>()
    };
    assert_eq!(shard_of("11"), shard_of("11"));

    // More shards than objects: the shard without one says so and is empty.
    s3.put("one/only.csv", b"1,2\n".to_vec());
    let dest = tempfile::tempdir().unwrap();
    let to = dest.path().join("train");
    let out = ok(run(
        &s3,
        &[
            "fetch",
            "--uri",
            &s3.uri("one/"),
            "--to",
            to.to_str().unwrap(),
            "--shard",
            "1/2",
        ],
    ));
    assert!(out.stdout.contains("leave shard 1/2 none"), "{out:#?}");
    assert!(files(&to).is_empty());

    // A URI naming one object: that object, under its file name.
    let out = ok(run(
        &s3,
        &[
            "fetch",
            "--uri",
            &s3.uri("data/part-3.csv"),
            "--to",
            to.to_str().unwrap(),
        ],
    ));
    assert!(out.stdout.contains("fetch: 1 object, "), "{out:#?}");
    assert_eq!(files(&to)["part-3.csv"], expected["part-3.csv"]);
}

#[test]
fn fetch_failures_say_what_to_fix() {
    let s3 = S3::start();
    s3.put("data/a.csv", b"1,2\n".to_vec());
    let dest = tempfile::tempdir().unwrap();
    let to = dest.path().join("x");
    let to = to.to_str().unwrap();

    let empty = s3.uri("nothing/here/");
    let out = run(&s3, &["fetch", "--uri", &empty, "--to", to]);
    assert_eq!(out.code, 2, "{out:#?}");
    let message = out.message.clone().unwrap();
    assert!(
        message.starts_with("s3://kiln-test/nothing/here/: no objects there"),
        "{message}"
    );
    assert!(message.contains("--allow-empty"), "{message}");
    assert!(out.stderr.contains(message.trim()), "{out:#?}");

    // A first run's checkpoint restore: nothing there yet is fine.
    let out = ok(run(
        &s3,
        &["fetch", "--uri", &empty, "--to", to, "--allow-empty"],
    ));
    assert!(out.stdout.contains("no objects there"), "{out:#?}");
    assert!(Path::new(to).is_dir() && files(Path::new(to)).is_empty());

    for (uri, says) in [
        (
            "pvc://claim/data",
            "pvc:// locations are mounted into the pod by the operator",
        ),
        (
            "file:///data",
            "file:// locations are mounted into the pod by the operator",
        ),
        ("/data", "not a storage URI"),
    ] {
        let out = run(&s3, &["fetch", "--uri", uri, "--to", to]);
        assert_eq!(out.code, 2, "{out:#?}");
        assert!(out.message.unwrap().contains(says), "{uri}");
    }

    let out = run(
        &s3,
        &[
            "fetch",
            "--uri",
            &s3.uri("data/"),
            "--to",
            to,
            "--shard",
            "2/2",
        ],
    );
    assert_eq!(out.code, 2, "{out:#?}");
    let message = out.message.unwrap();
    assert!(
        message.contains("the rank must be below the number of replicas"),
        "{message}"
    );

    // Wrong credentials: access denied, and the secret is never printed.
    let dir = tempfile::tempdir().unwrap();
    let out = command(
        &s3,
        dir.path(),
        &["fetch", "--uri", &s3.uri("data/"), "--to", to],
    )
    .env("AWS_SECRET_ACCESS_KEY", "not-the-secret")
    .output()
    .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let message = std::fs::read_to_string(dir.path().join("termination-message")).unwrap();
    assert!(message.contains("access denied"), "{message}");
    for text in [
        message,
        String::from_utf8_lossy(&out.stderr).into(),
        String::from_utf8_lossy(&out.stdout).into(),
    ] {
        assert!(!text.contains("not-the-secret"), "{text}");
        assert!(!text.contains(&s3.secret_key), "{text}");
    }
}

#[test]
fn fetch_decompresses_gzip_objects_and_archives() {
    let s3 = S3::start();
    s3.put("gz/rows.csv.gz", gzip(b"1,2\n3,4\n"));
    s3.put("gz/plain.csv", b"5,6\n".to_vec());
    let model = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(model.path().join("x")).unwrap();
    std::fs::write(model.path().join("x/1.txt"), b"one").unwrap();
    std::fs::write(model.path().join("2.txt"), b"two").unwrap();
    let mut tar = tar::Builder::new(flate2::write::GzEncoder::new(
        Vec::new(),
        flate2::Compression::fast(),
    ));
    for name in ["x/1.txt", "2.txt"] {
        tar.append_path_with_name(model.path().join(name), name)
            .unwrap();
    }
    s3.put(
        "gz/nested/bundle.tar.gz",
        tar.into_inner().unwrap().finish().unwrap(),
    );

    let dest = tempfile::tempdir().unwrap();
    let uri = s3.uri("gz");
    let to = dest.path().to_str().unwrap();
    ok(run(
        &s3,
        &["fetch", "--uri", &uri, "--to", to, "--decompress", "gzip"],
    ));
    let got = files(dest.path());
    let names: Vec<&str> = got.keys().map(String::as_str).collect();
    assert_eq!(
        names,
        ["nested/2.txt", "nested/x/1.txt", "plain.csv", "rows.csv"]
    );
    assert_eq!(got["rows.csv"], b"1,2\n3,4\n");
    assert_eq!(got["nested/x/1.txt"], b"one");

    // Without --decompress the objects come as they are.
    let raw = tempfile::tempdir().unwrap();
    ok(run(
        &s3,
        &["fetch", "--uri", &uri, "--to", raw.path().to_str().unwrap()],
    ));
    assert!(files(raw.path()).contains_key("nested/bundle.tar.gz"));
}

/// A model folder as an algorithm leaves it: more than one part (10 MiB)
/// of weights that gzip cannot shrink, so the archive goes up in parts.
fn model_folder() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("model.json"),
        br#"{"format": "kiln-model"}"#,
    )
    .unwrap();
    std::fs::write(dir.path().join("model.safetensors"), noise(12 << 20, 3)).unwrap();
    std::fs::create_dir_all(dir.path().join("code")).unwrap();
    std::fs::write(dir.path().join("code/inference.py"), b"print('hi')\n").unwrap();
    dir
}

#[test]
fn pushed_models_fetch_back_whole_with_their_sha256() {
    let s3 = S3::start();
    let model = model_folder();
    let from = model.path().to_str().unwrap();
    let out = ok(run(
        &s3,
        &["push", "--from", from, "--to", &s3.uri("jobs/j1/output")],
    ));
    let message = out.message.clone().unwrap();
    assert_eq!(out.stdout.trim(), message.trim(), "{out:#?}");
    let report: serde_json::Value = serde_json::from_str(&message).unwrap();
    assert_eq!(
        report["modelArtifactUri"],
        "s3://kiln-test/jobs/j1/output/model.tar.gz"
    );
    assert_eq!(
        listing(&s3, "jobs/j1/output/").keys().collect::<Vec<_>>(),
        ["model.tar.gz"]
    );

    // The archive as an object: its size and SHA-256 are the report's.
    let dest = tempfile::tempdir().unwrap();
    let uri = report["modelArtifactUri"].as_str().unwrap();
    ok(run(
        &s3,
        &["fetch", "--uri", uri, "--to", dest.path().to_str().unwrap()],
    ));
    let archive = dest.path().join("model.tar.gz");
    assert_eq!(sha256sum(&archive), report["sha256"].as_str().unwrap());
    assert_eq!(
        std::fs::metadata(&archive).unwrap().len(),
        report["bytes"].as_u64().unwrap()
    );
    // Its entries: the folder's contents at the root.
    let mut names = Vec::new();
    let mut tar = tar::Archive::new(flate2::read::GzDecoder::new(
        std::fs::File::open(&archive).unwrap(),
    ));
    for entry in tar.entries().unwrap() {
        let mut entry = entry.unwrap();
        names.push(entry.path().unwrap().to_string_lossy().into_owned());
        std::io::copy(&mut entry, &mut std::io::sink()).unwrap();
    }
    assert_eq!(
        names,
        [
            "code",
            "code/inference.py",
            "model.json",
            "model.safetensors"
        ]
    );

    // Fetched with --decompress: the model folder again.
    let unpacked = tempfile::tempdir().unwrap();
    ok(run(
        &s3,
        &[
            "fetch",
            "--uri",
            uri,
            "--to",
            unpacked.path().to_str().unwrap(),
            "--decompress",
            "gzip",
        ],
    ));
    assert!(files(unpacked.path()) == files(model.path()));

    // The same folder again, to a URI naming the archive: the same bytes.
    let named = s3.uri("jobs/j2/model.tar.gz");
    let again = ok(run(&s3, &["push", "--from", from, "--to", &named]));
    let second: serde_json::Value = serde_json::from_str(again.message.as_ref().unwrap()).unwrap();
    assert_eq!(second["modelArtifactUri"], named.as_str());
    assert_eq!(second["sha256"], report["sha256"]);

    // --compression none: the files under the prefix, and the digest of
    // their sha256sum manifest.
    let plain = ok(run(
        &s3,
        &[
            "push",
            "--from",
            from,
            "--to",
            &s3.uri("jobs/j3/model"),
            "--compression",
            "none",
        ],
    ));
    let third: serde_json::Value = serde_json::from_str(plain.message.as_ref().unwrap()).unwrap();
    assert_eq!(third["modelArtifactUri"], "s3://kiln-test/jobs/j3/model/");
    let back = tempfile::tempdir().unwrap();
    ok(run(
        &s3,
        &[
            "fetch",
            "--uri",
            &s3.uri("jobs/j3/model/"),
            "--to",
            back.path().to_str().unwrap(),
        ],
    ));
    let original = files(model.path());
    assert!(files(back.path()) == original);
    assert_eq!(
        third["bytes"].as_u64().unwrap(),
        original.values().map(|d| d.len() as u64).sum::<u64>()
    );
    let manifest: String = original
        .keys()
        .map(|name| format!("{}  {name}\n", sha256sum(&model.path().join(name))))
        .collect();
    let manifest_file = back.path().join("manifest");
    std::fs::write(&manifest_file, manifest).unwrap();
    assert_eq!(sha256sum(&manifest_file), third["sha256"].as_str().unwrap());
}

#[test]
fn push_without_a_destination_or_a_model() {
    let s3 = S3::start();
    let model = tempfile::tempdir().unwrap();
    let from = model.path().to_str().unwrap();
    // Ranks other than 0: nothing to do.
    let out = ok(run(&s3, &["push", "--from", from]));
    assert!(out.stdout.contains("nothing to push"), "{out:#?}");
    assert!(out.message.is_none(), "{out:#?}");

    let out = run(&s3, &["push", "--from", from, "--to", &s3.uri("out/")]);
    assert_eq!(out.code, 2, "{out:#?}");
    assert!(
        out.message
            .unwrap()
            .starts_with(&format!("the algorithm wrote nothing to {from}")),
        "{}",
        out.stderr
    );
    assert!(listing(&s3, "out/").is_empty());

    let model = model_folder();
    let from = model.path().to_str().unwrap();
    let out = run(
        &s3,
        &[
            "push",
            "--from",
            from,
            "--to",
            "gs://b/x",
            "--kms-key-id",
            "k",
        ],
    );
    assert_eq!(out.code, 2, "{out:#?}");
    assert!(
        out.message
            .unwrap()
            .contains("a KMS key id applies to s3:// only"),
        "{}",
        out.stderr
    );
}

#[test]
fn sync_uploads_new_checkpoints_and_makes_a_final_pass_on_sigterm() {
    use kiln_runtime::checkpoint::{Checkpoints, Position};
    let s3 = S3::start();
    let dir = tempfile::tempdir().unwrap();
    let ckpt = dir.path().join("checkpoints");
    std::fs::create_dir_all(&ckpt).unwrap();
    // Restored by fetch before the sidecar starts: already in the store.
    std::fs::write(ckpt.join("restored.bin"), b"restored").unwrap();
    s3.put("ckpt/restored.bin", b"restored".to_vec());
    let to = s3.uri("ckpt/");
    let mut child = command(
        &s3,
        dir.path(),
        &[
            "sync",
            "--dir",
            ckpt.to_str().unwrap(),
            "--to",
            &to,
            "--interval-seconds",
            "1",
        ],
    )
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .spawn()
    .unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut text = String::new();
        stdout.read_to_string(&mut text).unwrap();
        text
    });

    let save = |step: u64| {
        let mut checkpoints = Checkpoints::new(ckpt.clone(), 1, 0.0);
        let position = Position {
            step,
            ..Position::default()
        };
        let tensors = vec![(
            "w".to_string(),
            tch::Tensor::from_slice(&vec![step as f32; 1000]),
        )];
        checkpoints.save(&position, &tensors).unwrap();
    };
    let wait_for = |names: &[&str]| {
        let start = Instant::now();
        loop {
            let have = listing(&s3, "ckpt/");
            if names.iter().all(|n| have.contains_key(*n)) {
                return have;
            }
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "not uploaded: {names:?}; the store has {have:?}"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    };

    save(1);
    // Tensors whose JSON never comes: an interrupted checkpoint.
    std::fs::write(ckpt.join("ckpt-r0-000000000009.safetensors"), b"half").unwrap();
    std::fs::write(ckpt.join("notes.tmp"), b"being written").unwrap();
    wait_for(&[
        "ckpt-r0-000000000001.json",
        "ckpt-r0-000000000001.safetensors",
    ]);

    // The trainer's last checkpoint, written as the pod stops.
    save(2);
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let start = Instant::now();
    let code = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status.code();
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "sync did not stop within 20 s of SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    let stdout = reader.join().unwrap();
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    assert_eq!(code, Some(0), "{stdout}\n{stderr}");

    let have = listing(&s3, "ckpt/");
    assert_eq!(
        have.keys().collect::<Vec<_>>(),
        [
            "ckpt-r0-000000000001.json",
            "ckpt-r0-000000000001.safetensors",
            "ckpt-r0-000000000002.json",
            "ckpt-r0-000000000002.safetensors",
            "restored.bin",
        ],
        "{stdout}"
    );
    let local = std::fs::metadata(ckpt.join("ckpt-r0-000000000002.safetensors")).unwrap();
    assert_eq!(have["ckpt-r0-000000000002.safetensors"], local.len());
    assert!(stdout.contains("(1 file already there)"), "{stdout}");
    assert!(stdout.contains("sync: uploaded "), "{stdout}");
    assert!(
        stdout.contains("sync: stopping; uploaded 2 files, "),
        "{stdout}"
    );
    // The restored file was never uploaded again.
    assert!(!stdout.contains("restored.bin"), "{stdout}");
}
