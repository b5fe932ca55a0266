//! `kiln-runtime fetch`: every object under a storage URI (or the one
//! object it names) into a folder, at its relative key path, as the init
//! container of a remote channel or of a checkpoint restore runs it.
//!
//! With `--shard I/N` the objects, sorted by key and optionally shuffled
//! with a seed (the same order on every rank), go to shard `k mod N`:
//! SageMaker's `ShardedByS3Key`. With `--decompress gzip`, `.tar.gz` and
//! `.tgz` objects are unpacked into the folder (at the object's relative
//! folder) and other `.gz` objects are written without the suffix.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Instant;

use futures::{StreamExt, TryStreamExt};
use rand::SeedableRng;
use rand::seq::SliceRandom;

use super::{Failure, Outcome, count, human_bytes, remote_uri};
use crate::storage::{self, CONCURRENCY, Object, Remote, StorageError};

/// This rank's part of a sharded channel: shard `index` of `count`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    pub index: usize,
    pub count: usize,
}

impl fmt::Display for Shard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

impl std::str::FromStr for Shard {
    type Err = String;

    /// `I/N`: the rank and the number of replicas, `0 <= I < N`.
    fn from_str(s: &str) -> Result<Shard, String> {
        let parse = |part: &str| part.trim().parse::<usize>().ok();
        let (index, count) = s
            .split_once('/')
            .and_then(|(i, n)| Some((parse(i)?, parse(n)?)))
            .ok_or_else(|| format!("{s:?} is not RANK/REPLICAS, e.g. 0/4"))?;
        if count == 0 {
            return Err(format!("{s}: the number of replicas must be at least 1"));
        }
        if index >= count {
            return Err(format!(
                "{s}: the rank must be below the number of replicas (0 to {})",
                count - 1
            ));
        }
        Ok(Shard { index, count })
    }
}

/// How objects are decompressed on the way in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Decompress {
    /// `.tar.gz`/`.tgz` unpacked into the folder, `.gz` written without it.
    Gzip,
}

/// The settings of one fetch.
#[derive(Debug, Clone)]
pub struct Options {
    pub uri: String,
    pub to: PathBuf,
    pub shard: Option<Shard>,
    pub shuffle_seed: Option<u64>,
    pub decompress: Option<Decompress>,
    pub allow_empty: bool,
}

/// The positions (in the sorted listing of `n` objects) of the objects of
/// `shard`, in the order they are assigned: the listing, shuffled by
/// `seed` when one is given (ChaCha8, so every rank computes the same
/// order), dealt out as object `k` to shard `k mod count`. No shard: all.
pub fn assign(n: usize, shard: Option<Shard>, seed: Option<u64>) -> Vec<usize> {
    let mut order: Vec<usize> = (0..n).collect();
    if let Some(seed) = seed {
        order.shuffle(&mut rand_chacha::ChaCha8Rng::seed_from_u64(seed));
    }
    match shard {
        None => order,
        Some(Shard { index, count }) => order.into_iter().skip(index).step_by(count).collect(),
    }
}

/// What the object `relative` becomes with `decompress`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Landing {
    /// Written as it is, at this relative path.
    File(String),
    /// A gzipped file written decompressed at this relative path.
    Gunzip(String),
    /// A tar archive unpacked into this relative folder (`""`: the root).
    Unpack(String),
}

/// Where the object `relative` lands.
pub fn landing(relative: &str, decompress: Option<Decompress>) -> Landing {
    let Some(Decompress::Gzip) = decompress else {
        return Landing::File(relative.to_string());
    };
    if storage::is_tarball(relative) {
        let folder = relative.rsplit_once('/').map_or("", |(dir, _)| dir);
        Landing::Unpack(folder.to_string())
    } else if let Some(stem) = relative.strip_suffix(".gz").filter(|s| !s.ends_with('/')) {
        Landing::Gunzip(stem.to_string())
    } else {
        Landing::File(relative.to_string())
    }
}

/// Runs a fetch; prints one summary line.
pub fn run(options: &Options) -> Outcome {
    remote_uri("fetch", "--uri", &options.uri)?;
    storage::block_on(fetch(options))
}

async fn fetch(options: &Options) -> Outcome {
    let start = Instant::now();
    let remote = Remote::open(&options.uri).map_err(|e| Failure::input(e.0))?;
    let listing = remote.list_objects().await?;
    std::fs::create_dir_all(&options.to)
        .map_err(|e| Failure::other(format!("{}: {e}", options.to.display())))?;
    let shard_note = options
        .shard
        .map(|s| format!(" (shard {s})"))
        .unwrap_or_default();
    if listing.is_empty() {
        if !options.allow_empty {
            return Err(Failure::input(format!(
                "{}: no objects there (hidden names and folder markers are skipped); check the \
                 URI, or pass --allow-empty where an empty location is expected",
                options.uri
            )));
        }
        println!(
            "fetch: {}: no objects there; {} is left empty (--allow-empty)",
            options.uri,
            options.to.display()
        );
        return Ok(());
    }
    let mine = assign(listing.len(), options.shard, options.shuffle_seed);
    if let (true, Some(shard)) = (mine.is_empty(), options.shard) {
        println!(
            "fetch: {}: {} for {} shards leave shard {shard} none; {} is left empty",
            options.uri,
            count(listing.len(), "object"),
            shard.count,
            options.to.display()
        );
    }
    let objects: Vec<&Object> = mine.iter().map(|&i| &listing[i]).collect();
    let bytes = futures::stream::iter(objects.iter().copied())
        .map(|object| fetch_one(&remote, object, &options.to, options.decompress))
        .buffer_unordered(CONCURRENCY)
        .try_fold(0, |total, bytes| async move { Ok(total + bytes) })
        .await?;
    println!(
        "fetch: {}, {bytes} bytes ({}) in {:.1} s from {} to {}{shard_note}",
        count(objects.len(), "object"),
        human_bytes(bytes),
        start.elapsed().as_secs_f64(),
        options.uri,
        options.to.display()
    );
    Ok(())
}

/// Downloads one object where it lands; returns the bytes downloaded.
async fn fetch_one(
    remote: &Remote,
    object: &Object,
    dest: &Path,
    decompress: Option<Decompress>,
) -> Result<u64, StorageError> {
    let landing = landing(&object.relative, decompress);
    let (Landing::Gunzip(relative) | Landing::Unpack(relative)) = &landing else {
        let target = remote.target(dest, object)?;
        return remote.download_object(object, &target).await;
    };
    // Compressed: downloaded to a hidden file first, then decompressed from
    // it on a blocking thread, so a retried download starts clean.
    let archive = storage::partial_name(&remote.target(dest, object)?).with_extension("download");
    let bytes = remote.download_object(object, &archive).await?;
    let folder = safe_folder(dest, relative, &object.uri)?;
    let gunzip = matches!(landing, Landing::Gunzip(_));
    let uri = object.uri.clone();
    let unpacked = archive.clone();
    let result = tokio::task::spawn_blocking(move || {
        if gunzip {
            gunzip_file(&unpacked, &folder, &uri)
        } else {
            std::fs::create_dir_all(&folder)
                .map_err(|e| StorageError(format!("{}: {e}", folder.display())))?;
            storage::unpack(&unpacked, &folder).map_err(|e| StorageError(format!("{uri}: {}", e.0)))
        }
    })
    .await
    .map_err(|e| StorageError(format!("{}: {e}", object.uri)))
    .and_then(|r| r);
    let _ = std::fs::remove_file(&archive);
    result.map(|()| bytes)
}

/// `dest/relative` (a file for gunzip, a folder for unpacking), refusing
/// names that leave `dest`.
fn safe_folder(dest: &Path, relative: &str, uri: &str) -> Result<PathBuf, StorageError> {
    let mut out = dest.to_path_buf();
    for part in relative.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                return Err(StorageError(format!(
                    "{uri}: its name escapes the destination folder"
                )));
            }
            p => out.push(p),
        }
    }
    Ok(out)
}

/// Decompresses `archive` (gzip, every member) into the file `target`,
/// through a hidden partial file renamed into place.
fn gunzip_file(archive: &Path, target: &Path, uri: &str) -> Result<(), StorageError> {
    let io = |path: &Path, e: std::io::Error| StorageError(format!("{}: {e}", path.display()));
    if let Some(parent) = target.parent() {
        std::fs::create_dir_all(parent).map_err(|e| io(parent, e))?;
    }
    let input = std::fs::File::open(archive).map_err(|e| io(archive, e))?;
    let mut decoder = flate2::read::MultiGzDecoder::new(std::io::BufReader::new(input));
    let partial = storage::partial_name(target);
    let mut output = std::fs::File::create(&partial).map_err(|e| io(&partial, e))?;
    if let Err(e) = std::io::copy(&mut decoder, &mut output) {
        let _ = std::fs::remove_file(&partial);
        return Err(StorageError(format!("{uri}: not a usable gzip file: {e}")));
    }
    std::fs::rename(&partial, target).map_err(|e| io(target, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shard(s: &str) -> Option<Shard> {
        Some(s.parse().unwrap())
    }

    #[test]
    fn shards_parse_and_refuse_bad_ranks() {
        assert_eq!("1/4".parse::<Shard>(), Ok(Shard { index: 1, count: 4 }));
        assert!("4/4".parse::<Shard>().unwrap_err().contains("below"));
        assert!("0/0".parse::<Shard>().unwrap_err().contains("at least 1"));
        assert!("1".parse::<Shard>().unwrap_err().contains("RANK/REPLICAS"));
        assert!("a/2".parse::<Shard>().is_err());
    }

    #[test]
    fn sharded_by_key_deals_the_sorted_listing_round_robin() {
        assert_eq!(assign(5, None, None), vec![0, 1, 2, 3, 4]);
        assert_eq!(assign(5, shard("0/2"), None), vec![0, 2, 4]);
        assert_eq!(assign(5, shard("1/2"), None), vec![1, 3]);
        assert_eq!(assign(1, shard("1/2"), None), Vec::<usize>::new());
        assert_eq!(assign(0, shard("0/1"), None), Vec::<usize>::new());
    }

    #[test]
    fn every_object_goes_to_exactly_one_shard() {
        for seed in [None, Some(0), Some(7), Some(u64::MAX)] {
            for count in 1..=5 {
                let mut all: Vec<usize> = (0..count)
                    .flat_map(|index| assign(23, Some(Shard { index, count }), seed))
                    .collect();
                all.sort_unstable();
                assert_eq!(all, (0..23).collect::<Vec<_>>(), "{seed:?} {count}");
            }
        }
    }

    #[test]
    fn a_seed_gives_the_same_order_on_every_rank_and_another_seed_another() {
        let a = assign(50, None, Some(42));
        assert_eq!(a, assign(50, None, Some(42)));
        assert_ne!(a, assign(50, None, None));
        assert_ne!(a, assign(50, None, Some(43)));
        // The shards of a seeded order are that order dealt out.
        let first: Vec<usize> = a.iter().copied().step_by(3).collect();
        assert_eq!(assign(50, shard("0/3"), Some(42)), first);
    }

    #[test]
    fn gzip_objects_land_decompressed() {
        let gz = Some(Decompress::Gzip);
        assert_eq!(
            landing("a/b.csv.gz", None),
            Landing::File("a/b.csv.gz".into())
        );
        assert_eq!(landing("a/b.csv.gz", gz), Landing::Gunzip("a/b.csv".into()));
        assert_eq!(landing("a/m.tar.gz", gz), Landing::Unpack("a".into()));
        assert_eq!(landing("m.tgz", gz), Landing::Unpack("".into()));
        assert_eq!(landing("b.csv", gz), Landing::File("b.csv".into()));
    }

    #[test]
    fn gunzip_reads_every_member() {
        use std::io::Write;
        let dir = tempfile::tempdir().unwrap();
        let archive = dir.path().join("x.gz");
        let mut bytes = Vec::new();
        for part in ["a,1\n", "b,2\n"] {
            let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            gz.write_all(part.as_bytes()).unwrap();
            bytes.extend(gz.finish().unwrap());
        }
        std::fs::write(&archive, bytes).unwrap();
        let target = dir.path().join("sub/x");
        gunzip_file(&archive, &target, "s3://b/x.gz").unwrap();
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "a,1\nb,2\n");
        std::fs::write(&archive, b"not gzip").unwrap();
        let e = gunzip_file(&archive, &target, "s3://b/x.gz").unwrap_err();
        assert!(e.0.contains("s3://b/x.gz: not a usable gzip file"), "{e}");
    }
}
