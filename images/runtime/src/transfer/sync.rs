//! `kiln-runtime sync`: the checkpoint sidecar. Every interval it uploads
//! the files under the folder that are new or changed (size or
//! modification time) since the pass that last uploaded them; on SIGTERM
//! (or SIGINT) it makes a final pass and exits 0.
//!
//! A file still being written is never uploaded:
//! - hidden names (`.x`, which is also where `fetch` downloads to) and
//!   names ending in `.tmp` or `.partial` are skipped;
//! - a file modified in the last second is left for the next pass;
//! - the runtime's own checkpoints ([`crate::checkpoint`]) are complete
//!   once `ckpt-r<rank>-<step>.json` is renamed into place after
//!   `ckpt-r<rank>-<step>.safetensors` (`ckpt-<step>` from older
//!   runtimes): the tensors are uploaded only once that JSON exists, and
//!   the JSON after them, so a store that has the JSON has the whole
//!   checkpoint, whatever moment a pod stops at.
//!
//! At start, files that the store already has with the same size (a
//! checkpoint just restored by `fetch`) count as uploaded.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use super::{Failure, Outcome, count, human_bytes, remote_uri};
use crate::storage::{self, Remote};

/// A file younger than this may still be being written.
pub const SETTLE: Duration = Duration::from_secs(1);

/// Times the final pass waits for files still settling before it uploads
/// what has settled.
const FINAL_WAITS: u32 = 3;

/// The settings of the sidecar.
#[derive(Debug, Clone)]
pub struct Options {
    pub dir: PathBuf,
    pub to: String,
    pub interval: Duration,
    pub kms_key_id: Option<String>,
}

/// One file under the folder as a pass sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct FileState {
    /// Its path relative to the folder, with `/`.
    pub name: String,
    pub size: u64,
    pub modified: SystemTime,
}

/// What a pass uploads, in order, and what it leaves for later.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Plan {
    /// Indices into the scanned files, in upload order.
    pub upload: Vec<usize>,
    /// Files new or changed but modified within [`SETTLE`].
    pub settling: usize,
    /// Runtime checkpoint tensors whose JSON is not there yet.
    pub incomplete: usize,
}

/// The step of a runtime checkpoint file name and whether it is the JSON:
/// `ckpt-r1-000000000010.json` (rank 1's) and `ckpt-000000000010.json` (an
/// older runtime's) are `("000000000010", true)`.
fn checkpoint_file(name: &str) -> Option<(&str, bool)> {
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    let base = name.rsplit('/').next().unwrap_or(name);
    let mut rest = base.strip_prefix("ckpt-")?;
    if let Some((rank, after)) = rest.strip_prefix('r').and_then(|r| r.split_once('-')) {
        if !digits(rank) {
            return None;
        }
        rest = after;
    }
    let (step, json) = if let Some(step) = rest.strip_suffix(".json") {
        (step, true)
    } else {
        (rest.strip_suffix(".safetensors")?, false)
    };
    digits(step).then_some((step, json))
}

/// Whether a name is never uploaded: hidden, or a temporary name.
fn skipped(name: &str) -> bool {
    name.split('/').any(|part| part.starts_with('.'))
        || name.ends_with(".tmp")
        || name.ends_with(".partial")
}

/// Which of `files` a pass at `now` uploads, given the state each had when
/// it was last uploaded (`uploaded`).
pub fn plan(
    uploaded: &BTreeMap<String, (u64, SystemTime)>,
    files: &[FileState],
    now: SystemTime,
) -> Plan {
    let present: BTreeSet<&str> = files.iter().map(|f| f.name.as_str()).collect();
    let mut plan = Plan::default();
    let mut last = Vec::new();
    for (i, file) in files.iter().enumerate() {
        if skipped(&file.name) || uploaded.get(&file.name) == Some(&(file.size, file.modified)) {
            continue;
        }
        // A time in the future (a skewed clock) counts as just now.
        let age = now.duration_since(file.modified).unwrap_or_default();
        if age < SETTLE {
            plan.settling += 1;
            continue;
        }
        match checkpoint_file(&file.name) {
            Some((_, true)) => last.push(i),
            Some((_, false)) => {
                let json = format!("{}.json", file.name.trim_end_matches(".safetensors"));
                if present.contains(json.as_str()) {
                    plan.upload.push(i);
                } else {
                    plan.incomplete += 1;
                }
            }
            None => plan.upload.push(i),
        }
    }
    // A JSON goes up once its tensors are up (or going up first).
    for i in last {
        let tensors = format!("{}.safetensors", files[i].name.trim_end_matches(".json"));
        let ready = match files.iter().position(|f| f.name == tensors) {
            None => true,
            Some(t) => {
                plan.upload.contains(&t)
                    || uploaded.get(&tensors) == Some(&(files[t].size, files[t].modified))
            }
        };
        if ready {
            plan.upload.push(i);
        } else {
            plan.incomplete += 1;
        }
    }
    plan
}

/// The files under `dir`, sorted by name (none when it does not exist).
pub fn scan(dir: &Path) -> std::io::Result<Vec<FileState>> {
    let mut out = Vec::new();
    if !dir.exists() {
        return Ok(out);
    }
    for entry in walkdir::WalkDir::new(dir).min_depth(1).sort_by_file_name() {
        let entry = match entry {
            Ok(entry) => entry,
            // Deleted while walking (the trainer prunes old checkpoints).
            Err(e) if e.io_error().map(|e| e.kind()) == Some(std::io::ErrorKind::NotFound) => {
                continue;
            }
            Err(e) => return Err(std::io::Error::other(e)),
        };
        if !entry.file_type().is_file() {
            continue;
        }
        let Ok(meta) = entry.metadata() else {
            continue; // deleted since it was listed
        };
        out.push(FileState {
            name: storage::relative_name(dir, entry.path()),
            size: meta.len(),
            modified: meta.modified()?,
        });
    }
    Ok(out)
}

/// The sidecar's state between passes.
struct Syncer {
    remote: Remote,
    dir: PathBuf,
    uploaded: BTreeMap<String, (u64, SystemTime)>,
}

/// What one pass did.
#[derive(Debug, Default)]
struct Pass {
    names: Vec<String>,
    bytes: u64,
    settling: usize,
}

impl Syncer {
    /// Counts as uploaded the local files the store has with the same size.
    async fn seed(&mut self) -> Outcome {
        let remote: BTreeMap<String, u64> = self
            .remote
            .list_objects()
            .await?
            .into_iter()
            .map(|o| (o.relative, o.size))
            .collect();
        let files = scan(&self.dir).map_err(|e| self.io(e))?;
        for f in files {
            if remote.get(&f.name) == Some(&f.size) {
                self.uploaded.insert(f.name, (f.size, f.modified));
            }
        }
        Ok(())
    }

    /// Uploads what [`plan`] picks; stops at the first failure (so a
    /// checkpoint's JSON never goes up without its tensors).
    async fn pass(&mut self) -> Outcome<Pass> {
        let files = scan(&self.dir).map_err(|e| self.io(e))?;
        let plan = plan(&self.uploaded, &files, SystemTime::now());
        let mut pass = Pass {
            settling: plan.settling,
            ..Pass::default()
        };
        for i in plan.upload {
            let file = &files[i];
            let path = self.dir.join(&file.name);
            match self.remote.upload_file(&path, &file.name).await {
                Ok(up) => pass.bytes += up.bytes,
                // Deleted since the scan (the trainer prunes old ones).
                Err(_) if !path.exists() => continue,
                Err(e) => return Err(e.into()),
            }
            self.uploaded
                .insert(file.name.clone(), (file.size, file.modified));
            pass.names.push(file.name.clone());
        }
        Ok(pass)
    }

    fn io(&self, e: std::io::Error) -> Failure {
        Failure::other(format!("{}: {e}", self.dir.display()))
    }
}

/// Prints the line of a pass that uploaded something.
fn print_pass(pass: &Pass, seconds: f64, to: &str, last: bool) {
    if pass.names.is_empty() {
        if last {
            println!("sync: stopping; nothing new to upload to {to}");
        }
        return;
    }
    const SHOWN: usize = 4;
    let mut names = pass.names[..pass.names.len().min(SHOWN)].join(", ");
    if pass.names.len() > SHOWN {
        names += &format!(", and {} more", pass.names.len() - SHOWN);
    }
    println!(
        "sync: {}uploaded {}, {} bytes ({}) in {seconds:.1} s to {to}: {names}",
        if last { "stopping; " } else { "" },
        count(pass.names.len(), "file"),
        pass.bytes,
        human_bytes(pass.bytes),
    );
}

/// Runs the sidecar until SIGTERM or SIGINT.
pub fn run(options: &Options) -> Outcome {
    remote_uri("sync", "--to", &options.to)?;
    let remote = Remote::open_options(
        &options.to,
        &storage::Options {
            kms_key_id: options.kms_key_id.clone(),
        },
    )
    .map_err(|e| Failure::input(e.0))?;
    storage::block_on(async {
        use tokio::signal::unix::{SignalKind, signal};
        let signals = signal(SignalKind::terminate()).and_then(|term| {
            let int = signal(SignalKind::interrupt())?;
            Ok((term, int))
        });
        let (mut term, mut int) =
            signals.map_err(|e| Failure::other(format!("cannot watch for SIGTERM: {e}")))?;
        let mut syncer = Syncer {
            remote,
            dir: options.dir.clone(),
            uploaded: BTreeMap::new(),
        };
        syncer.seed().await?;
        println!(
            "sync: {} to {} every {} s ({} already there)",
            options.dir.display(),
            options.to,
            options.interval.as_secs_f64(),
            count(syncer.uploaded.len(), "file")
        );
        loop {
            tokio::select! {
                _ = tokio::time::sleep(options.interval) => {}
                _ = term.recv() => break,
                _ = int.recv() => break,
            }
            let start = Instant::now();
            match syncer.pass().await {
                Ok(pass) => print_pass(&pass, start.elapsed().as_secs_f64(), &options.to, false),
                // The next pass tries again; only the final one must succeed.
                Err(e) => eprintln!("sync: {}; trying again in the next pass", e.message),
            }
        }
        // The final pass: files still settling get a moment (the trainer
        // writes its last checkpoint on the same SIGTERM).
        let start = Instant::now();
        let mut total = Pass::default();
        for wait in 0..=FINAL_WAITS {
            let pass = syncer.pass().await.map_err(|e| Failure {
                message: format!("sync: the final pass failed: {}", e.message),
                code: e.code,
            })?;
            total.names.extend(pass.names);
            total.bytes += pass.bytes;
            if pass.settling == 0 || wait == FINAL_WAITS {
                break;
            }
            tokio::time::sleep(SETTLE + Duration::from_millis(100)).await;
        }
        print_pass(&total, start.elapsed().as_secs_f64(), &options.to, true);
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(seconds: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(seconds)
    }

    fn file(name: &str, size: u64, modified: u64) -> FileState {
        FileState {
            name: name.into(),
            size,
            modified: at(modified),
        }
    }

    fn names(files: &[FileState], plan: &Plan) -> Vec<String> {
        plan.upload.iter().map(|&i| files[i].name.clone()).collect()
    }

    #[test]
    fn new_and_changed_files_are_uploaded_and_unchanged_ones_not() {
        let files = vec![file("a.pt", 10, 100), file("b/c.pt", 5, 100)];
        let mut uploaded = BTreeMap::new();
        let plan1 = plan(&uploaded, &files, at(200));
        assert_eq!(names(&files, &plan1), ["a.pt", "b/c.pt"]);
        for f in &files {
            uploaded.insert(f.name.clone(), (f.size, f.modified));
        }
        assert_eq!(plan(&uploaded, &files, at(300)), Plan::default());
        // Same size, newer time; same time, other size.
        let changed = vec![file("a.pt", 10, 150), file("b/c.pt", 6, 100)];
        assert_eq!(
            names(&changed, &plan(&uploaded, &changed, at(300))),
            ["a.pt", "b/c.pt"]
        );
    }

    #[test]
    fn files_being_written_and_temporary_names_wait() {
        let now = at(1000);
        let files = vec![
            file(".hidden", 1, 10),
            file("sub/.x.partial", 1, 10),
            file("ckpt-000000000004.json.tmp", 1, 10),
            file("state.partial", 1, 10),
            FileState {
                name: "fresh.bin".into(),
                size: 1,
                modified: now - Duration::from_millis(300),
            },
            FileState {
                name: "future.bin".into(),
                size: 1,
                modified: now + Duration::from_secs(5),
            },
            file("old.bin", 1, 10),
        ];
        let p = plan(&BTreeMap::new(), &files, now);
        assert_eq!(names(&files, &p), ["old.bin"]);
        assert_eq!(p.settling, 2);
    }

    #[test]
    fn runtime_checkpoints_go_up_whole_tensors_first() {
        let files = vec![
            file("ckpt-000000000002.json", 50, 100),
            file("ckpt-000000000002.safetensors", 900, 100),
            file("ckpt-000000000003.safetensors", 400, 100),
            file("notes.txt", 3, 100),
        ];
        let p = plan(&BTreeMap::new(), &files, at(200));
        assert_eq!(
            names(&files, &p),
            [
                "ckpt-000000000002.safetensors",
                "notes.txt",
                "ckpt-000000000002.json"
            ]
        );
        assert_eq!(p.incomplete, 1);
        // Tensors still settling hold their JSON back.
        let files = vec![
            file("ckpt-000000000005.json", 50, 100),
            file("ckpt-000000000005.safetensors", 900, 200),
        ];
        let p = plan(&BTreeMap::new(), &files, at(200));
        assert!(p.upload.is_empty(), "{p:?}");
        assert_eq!((p.settling, p.incomplete), (1, 1));
    }

    #[test]
    fn checkpoint_names() {
        assert_eq!(
            checkpoint_file("ckpt-000000000010.json"),
            Some(("000000000010", true))
        );
        assert_eq!(checkpoint_file("a/ckpt-7.safetensors"), Some(("7", false)));
        assert_eq!(
            checkpoint_file("ckpt-r12-000000000010.json"),
            Some(("000000000010", true))
        );
        assert_eq!(
            checkpoint_file("ckpt-r0-000000000003.safetensors"),
            Some(("000000000003", false))
        );
        assert_eq!(checkpoint_file("ckpt-rx-000000000003.json"), None);
        assert_eq!(checkpoint_file("ckpt-r1-.json"), None);
        assert_eq!(checkpoint_file("ckpt-x.json"), None);
        assert_eq!(checkpoint_file("ckpt-.json"), None);
        assert_eq!(checkpoint_file("model.safetensors"), None);
    }

    #[test]
    fn scan_lists_files_sorted_and_a_missing_folder_as_empty() {
        let dir = tempfile::tempdir().unwrap();
        assert!(scan(&dir.path().join("absent")).unwrap().is_empty());
        std::fs::create_dir_all(dir.path().join("z/y")).unwrap();
        std::fs::write(dir.path().join("z/y/f"), b"123").unwrap();
        std::fs::write(dir.path().join("a"), b"").unwrap();
        let files = scan(dir.path()).unwrap();
        let got: Vec<(&str, u64)> = files.iter().map(|f| (f.name.as_str(), f.size)).collect();
        assert_eq!(got, [("a", 0), ("z/y/f", 3)]);
    }
}
