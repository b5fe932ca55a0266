//! Channels: the files under `input/data/<channel>/` read into one feature
//! matrix and one label vector. Readers stream rows (CSV record by record,
//! Parquet row group by row group) into bounded chunks, and the chunks are
//! moved into the final tensor one at a time, so a dataset is never held twice.
//!
//! With `world > 1` and a fully replicated channel, every rank reads the whole
//! stream and keeps rows `i` with `i % world == rank`: local row `j` is global
//! row `j * world + rank`, which lets the trainers rebuild the exact global
//! batches of a one-rank run.
//!
//! A channel of image files (see [`images`]) gives one row per image, its
//! pixels resized to `image_shape`, and the class names of its folders.
//!
//! A channel with a storage URI ([`read_remote`]) is read straight from the
//! store: CSV objects streamed, Parquet objects a row group at a time by
//! range requests. Image files are first fetched to the channel's folder.

mod csv;
pub mod images;
mod parquet;

use std::path::{Path, PathBuf};

use tch::{Kind, Tensor};

use crate::error::{Error, Result};
use crate::storage::{self, Remote};

/// Floats per chunk before it is handed over (4 MiB).
const CHUNK_FLOATS: usize = 1 << 20;

/// On-disk formats of a channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Csv,
    Parquet,
}

impl Format {
    /// From the channel's `ContentType`, or else from a file's extension.
    pub fn detect(content_type: Option<&str>, file: &Path) -> Format {
        if let Some(ct) = content_type.map(str::to_ascii_lowercase) {
            if ct.contains("parquet") {
                return Format::Parquet;
            }
            if ct.contains("csv") {
                return Format::Csv;
            }
        }
        match file.extension().and_then(|e| e.to_str()) {
            Some("parquet" | "pq") => Format::Parquet,
            _ => Format::Csv,
        }
    }
}

/// How to read one channel.
#[derive(Debug, Clone)]
pub struct ReadOptions {
    /// Whether the first column is the label.
    pub has_label: bool,
    /// This rank and the number of ranks; `(0, 1)` reads everything.
    pub rank: usize,
    pub world: usize,
    /// The `ContentType` of `inputdataconfig.json`, if any.
    pub content_type: Option<String>,
    /// Image files: channels, height and width of the rows (the
    /// `image_shape` hyperparameter); `None` takes the first image's.
    pub image_shape: Option<Vec<i64>>,
    /// Image class folders: the train channel's class names, which an
    /// evaluation channel must use; `None` numbers this channel's own.
    pub classes: Option<Vec<String>>,
    /// A remote channel distributed `ShardedByS3Key`: this rank reads
    /// objects `i % world == rank` of the sorted listing (and every row of
    /// them); `None` reads every object.
    pub object_shard: Option<(usize, usize)>,
}

impl Default for ReadOptions {
    fn default() -> Self {
        ReadOptions {
            has_label: true,
            rank: 0,
            world: 1,
            content_type: None,
            image_shape: None,
            classes: None,
            object_shard: None,
        }
    }
}

/// A channel in memory: features `[rows, cols]` float32 and labels `[rows]`.
#[derive(Debug)]
pub struct Dataset {
    pub x: Tensor,
    pub y: Option<Tensor>,
    /// Rows of the stream this rank read: the whole channel, or with
    /// `ShardedByS3Key` this rank's shard (see [`crate::layout::RowLayout`]
    /// for the rows of all ranks together).
    pub global_rows: usize,
    /// Class names by label, for image files in class folders.
    pub classes: Option<Vec<String>>,
}

impl Dataset {
    /// Rows held by this rank.
    pub fn rows(&self) -> usize {
        self.x.size()[0] as usize
    }

    /// Feature columns.
    pub fn cols(&self) -> usize {
        self.x.size()[1] as usize
    }

    /// The labels; an error naming the channel when it has none.
    pub fn labels(&self, channel: &str) -> Result<&Tensor> {
        self.y
            .as_ref()
            .ok_or_else(|| Error::data(channel, "this algorithm needs labels"))
    }
}

/// The data files of a channel folder, sorted by name; hidden files skipped.
pub fn channel_files(channel: &str, dir: &Path) -> Result<Vec<PathBuf>> {
    if !dir.is_dir() {
        return Err(Error::data(
            channel,
            format!("missing: no folder {}", dir.display()),
        ));
    }
    let mut files = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).map_err(Error::io(&d))? {
            let entry = entry.map_err(Error::io(&d))?;
            let path = entry.path();
            if entry.file_name().to_string_lossy().starts_with('.') {
                continue;
            }
            if path.is_dir() {
                stack.push(path);
            } else {
                files.push(path);
            }
        }
    }
    files.sort();
    if files.is_empty() {
        return Err(Error::data(
            channel,
            format!("empty: no files in {}", dir.display()),
        ));
    }
    Ok(files)
}

/// Reads a whole channel folder (one or many files).
pub fn read_channel(channel: &str, dir: &Path, opts: &ReadOptions) -> Result<Dataset> {
    let content_type = opts.content_type.as_deref();
    if content_type.is_some_and(images::is_image_content_type) {
        return read_images(channel, dir, opts);
    }
    let files = channel_files(channel, dir)?;
    let other_type = content_type.is_some_and(|ct| {
        let ct = ct.to_ascii_lowercase();
        ct.contains("csv") || ct.contains("parquet")
    });
    if !other_type && images::looks_like_images(&files, dir) {
        return read_images(channel, dir, opts);
    }
    let mut sink = RowSink::new(channel, opts);
    for file in &files {
        sink.file = file.clone();
        match Format::detect(opts.content_type.as_deref(), file) {
            Format::Csv => csv::read(file, &mut sink)?,
            Format::Parquet => parquet::read(file, &mut sink)?,
        }
    }
    sink.finish()
}

/// Reads a channel from a storage URI (see the module documentation);
/// image files are fetched to `local` and read from there.
pub fn read_remote(channel: &str, uri: &str, local: &Path, opts: &ReadOptions) -> Result<Dataset> {
    let (remote, objects) = list_remote(channel, uri, opts.object_shard)?;
    let content_type = opts.content_type.as_deref();
    let tabular = content_type.is_some_and(|ct| {
        let ct = ct.to_ascii_lowercase();
        ct.contains("csv") || ct.contains("parquet")
    });
    let images = content_type.is_some_and(images::is_image_content_type)
        || (!tabular
            && objects.iter().any(|o| {
                let name = Path::new(&o.relative);
                images::is_image(name)
                    || (!o.relative.contains('/') && name.extension().is_some_and(|e| e == "lst"))
            }));
    if images {
        fetch_objects(channel, &remote, &objects, local)?;
        return read_images(channel, local, opts);
    }
    let mut sink = RowSink::new(channel, opts);
    for object in &objects {
        sink.file = PathBuf::from(&object.uri);
        match Format::detect(content_type, Path::new(&object.relative)) {
            Format::Csv => csv::read_from(remote.reader(&object.key), &mut sink)?,
            Format::Parquet => parquet::read_remote(&remote, object, &mut sink)?,
        }
    }
    sink.finish()
}

/// Fetches a remote channel's objects (this rank's share of them) into
/// `local`, for readers of local files.
pub fn fetch_remote(
    channel: &str,
    uri: &str,
    local: &Path,
    shard: Option<(usize, usize)>,
) -> Result<()> {
    let (remote, objects) = list_remote(channel, uri, shard)?;
    fetch_objects(channel, &remote, &objects, local)
}

fn list_remote(
    channel: &str,
    uri: &str,
    shard: Option<(usize, usize)>,
) -> Result<(Remote, Vec<storage::Object>)> {
    let remote = Remote::open(uri).map_err(|e| Error::data(channel, e.0))?;
    let mut objects = storage::block_on(remote.list()).map_err(|e| Error::data(channel, e.0))?;
    if let Some((rank, world)) = shard {
        objects = objects
            .into_iter()
            .enumerate()
            .filter(|(i, _)| i % world == rank)
            .map(|(_, o)| o)
            .collect();
        if objects.is_empty() {
            return Err(Error::data(
                channel,
                format!(
                    "{uri}: ShardedByS3Key leaves rank {rank} of {world} no object; give the channel at least as many objects as ranks"
                ),
            ));
        }
    }
    Ok((remote, objects))
}

fn fetch_objects(
    channel: &str,
    remote: &Remote,
    objects: &[storage::Object],
    local: &Path,
) -> Result<()> {
    storage::block_on(remote.download(objects, local))
        .map(|_| ())
        .map_err(|e| Error::data(channel, e.0))
}

fn read_images(channel: &str, dir: &Path, opts: &ReadOptions) -> Result<Dataset> {
    let shape = opts
        .image_shape
        .as_deref()
        .map(images::shape_from)
        .transpose()?;
    let listing = images::scan(channel, dir, opts.classes.as_deref())?;
    let mut sink = RowSink::new(channel, opts);
    images::read(channel, &listing, shape, &mut sink)?;
    let mut ds = sink.finish()?;
    ds.classes = listing.classes;
    Ok(ds)
}

/// Where readers push rows: checks them, keeps this rank's share, and packs
/// them into chunks.
pub(crate) struct RowSink<'a> {
    channel: &'a str,
    opts: &'a ReadOptions,
    pub(crate) file: PathBuf,
    cols: Option<usize>,
    seen: usize,
    chunks: Vec<(Vec<f32>, Vec<f32>)>,
    rows: usize,
}

impl<'a> RowSink<'a> {
    fn new(channel: &'a str, opts: &'a ReadOptions) -> Self {
        RowSink {
            channel,
            opts,
            file: PathBuf::new(),
            cols: None,
            seen: 0,
            chunks: vec![],
            rows: 0,
        }
    }

    /// An error about a place in the current file (`where_` is e.g. "line 7").
    pub(crate) fn error(&self, where_: &str, reason: impl std::fmt::Display) -> Error {
        Error::data(
            self.channel,
            format!("{} {where_}: {reason}", self.file.display()),
        )
    }

    /// Whether the next row belongs to another rank; it is then counted as
    /// read, so a reader can skip decoding it.
    pub(crate) fn skip_other_rank(&mut self) -> bool {
        let other = self.seen % self.opts.world != self.opts.rank;
        if other {
            self.seen += 1;
        }
        other
    }

    /// One row: all values, label first when the channel has labels.
    pub(crate) fn push(&mut self, where_: &dyn Fn() -> String, values: &[f32]) -> Result<()> {
        let expected = *self.cols.get_or_insert(values.len());
        if values.len() != expected {
            return Err(self.error(
                &where_(),
                format!("{} columns, but earlier rows have {expected}", values.len()),
            ));
        }
        let min_cols = if self.opts.has_label { 2 } else { 1 };
        if values.len() < min_cols {
            return Err(self.error(&where_(), "a row needs a label and at least one feature"));
        }
        if let Some(col) = values.iter().position(|v| !v.is_finite()) {
            return Err(self.error(
                &where_(),
                format!(
                    "column {} is {}: NaN and infinity are not allowed",
                    col + 1,
                    values[col]
                ),
            ));
        }
        let mine = self.seen % self.opts.world == self.opts.rank;
        self.seen += 1;
        if !mine {
            return Ok(());
        }
        let (label, features) = if self.opts.has_label {
            (Some(values[0]), &values[1..])
        } else {
            (None, values)
        };
        let full = self
            .chunks
            .last()
            .is_none_or(|(x, _)| x.len() + features.len() > CHUNK_FLOATS);
        if full {
            self.chunks
                .push((Vec::with_capacity(CHUNK_FLOATS), Vec::new()));
        }
        let (x, y) = self.chunks.last_mut().expect("chunk");
        x.extend_from_slice(features);
        y.extend(label);
        self.rows += 1;
        Ok(())
    }

    fn finish(self) -> Result<Dataset> {
        let Some(cols) = self.cols else {
            return Err(Error::data(self.channel, "empty: the files hold no rows"));
        };
        if self.rows == 0 {
            return Err(Error::data(
                self.channel,
                format!(
                    "rank {} of {} got no rows ({} in all)",
                    self.opts.rank, self.opts.world, self.seen
                ),
            ));
        }
        let features = cols - usize::from(self.opts.has_label);
        // The target is allocated untouched, then filled chunk by chunk while
        // each chunk is freed, so resident memory stays about one copy.
        let x = Tensor::empty(
            [self.rows as i64, features as i64],
            (Kind::Float, tch::Device::Cpu),
        );
        crate::par::advise_huge_pages(&x);
        let y = self
            .opts
            .has_label
            .then(|| Tensor::empty([self.rows as i64], (Kind::Float, tch::Device::Cpu)));
        let mut offset = 0i64;
        for (cx, cy) in self.chunks {
            let n = (cx.len() / features.max(1)) as i64;
            x.narrow(0, offset, n)
                .copy_(&Tensor::from_slice(&cx).view([n, features as i64]));
            if let Some(y) = &y {
                y.narrow(0, offset, n).copy_(&Tensor::from_slice(&cy));
            }
            offset += n;
        }
        Ok(Dataset {
            x,
            y,
            global_rows: self.seen,
            classes: None,
        })
    }
}

#[cfg(test)]
mod tests;
