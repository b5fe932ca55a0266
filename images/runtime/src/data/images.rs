//! Image-file channels, as SageMaker's image classification takes them
//! (`application/x-image`, `image/png`, `image/jpeg`): one folder per class,
//! `<channel>/<class>/<file>.png|.jpg|.jpeg`, or a `.lst` file at the channel
//! root listing `index<TAB>label<TAB>relative/path` lines.
//!
//! Class folders are labelled `0..n` in sorted order of their names (of the
//! train channel: an evaluation channel uses the train channel's mapping).
//! Every image becomes one row: its label, then `channels x height x width`
//! float32 values in `[0, 1]` in CHW order, after conversion to the wanted
//! channel count (grey to RGB by copying, RGB to grey by Rec. 709 luminance,
//! alpha dropped) and a bilinear resize (a triangle filter, which averages
//! neighbouring pixels when shrinking) to the wanted height and width.
//! Images are decoded one at a time, in sorted path order (or `.lst` order),
//! and a rank decodes only its own rows.

use std::path::{Path, PathBuf};

use image::imageops::{self, FilterType};
use image::{DynamicImage, ImageBuffer, ImageReader, Luma, Pixel};

use super::RowSink;
use crate::error::{Error, Result};

/// Extensions of image files (compared without case).
pub const EXTENSIONS: [&str; 3] = ["png", "jpg", "jpeg"];

/// Whether `path` names an image file by its extension.
pub fn is_image(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| EXTENSIONS.iter().any(|x| e.eq_ignore_ascii_case(x)))
}

fn is_list(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| e.eq_ignore_ascii_case("lst"))
}

fn hidden(path: &Path) -> bool {
    path.file_name()
        .is_some_and(|n| n.to_string_lossy().starts_with('.'))
}

/// Whether a `ContentType` names image files.
pub fn is_image_content_type(content_type: &str) -> bool {
    let ct = content_type.trim().to_ascii_lowercase();
    ct.starts_with("image/") || ct.starts_with("application/x-image")
}

/// Whether a channel folder without an image `ContentType` holds image
/// files: a `.lst` file at its root, or any `.png`, `.jpg` or `.jpeg` file.
pub fn looks_like_images(files: &[PathBuf], dir: &Path) -> bool {
    files
        .iter()
        .any(|f| is_image(f) || (is_list(f) && f.parent() == Some(dir)))
}

/// The images of a channel and their labels, in reading order.
#[derive(Debug, PartialEq)]
pub struct Listing {
    /// Class names by label (folder layout); `None` with a `.lst` file.
    pub classes: Option<Vec<String>>,
    pub items: Vec<(PathBuf, f32)>,
}

/// Entries of a folder, hidden ones skipped, sorted by name.
fn entries(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(Error::io(dir))? {
        let path = entry.map_err(Error::io(dir))?.path();
        if !hidden(&path) {
            out.push(path);
        }
    }
    out.sort();
    Ok(out)
}

/// Image files of a class folder and its subfolders, sorted by path; any
/// other file is an error.
fn class_images(channel: &str, class: &str, dir: &Path) -> Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for path in entries(&d)? {
            if path.is_dir() {
                stack.push(path);
            } else if is_image(&path) {
                files.push(path);
            } else {
                return Err(Error::data(
                    channel,
                    format!(
                        "{}: not an image file (expected .png, .jpg or .jpeg)",
                        path.display()
                    ),
                ));
            }
        }
    }
    if files.is_empty() {
        return Err(Error::data(
            channel,
            format!(
                "class folder {class:?} is empty: no images in {}",
                dir.display()
            ),
        ));
    }
    files.sort();
    Ok(files)
}

/// The class folders of a channel (sorted names), without reading images.
pub fn class_names(channel: &str, dir: &Path) -> Result<Vec<String>> {
    let mut names = Vec::new();
    for path in entries(dir)? {
        if path.is_dir() {
            let name = path.file_name().and_then(|n| n.to_str()).ok_or_else(|| {
                Error::data(
                    channel,
                    format!("class folder {}: the name is not UTF-8", path.display()),
                )
            })?;
            names.push(name.to_string());
        }
    }
    Ok(names)
}

/// Lists the images of a channel folder. `known` is the train channel's
/// classes, which an evaluation channel must use.
pub fn scan(channel: &str, dir: &Path, known: Option<&[String]>) -> Result<Listing> {
    if !dir.is_dir() {
        return Err(Error::data(
            channel,
            format!("missing: no folder {}", dir.display()),
        ));
    }
    let top = entries(dir)?;
    let lists: Vec<&PathBuf> = top.iter().filter(|p| p.is_file() && is_list(p)).collect();
    match lists[..] {
        [] => {}
        [list] => return read_list(channel, dir, list),
        _ => {
            let names: Vec<String> = lists.iter().map(|p| p.display().to_string()).collect();
            return Err(Error::data(
                channel,
                format!("several .lst files, expected one: {}", names.join(", ")),
            ));
        }
    }
    let classes = class_names(channel, dir)?;
    let loose: Vec<&PathBuf> = top.iter().filter(|p| !p.is_dir()).collect();
    let layout = "expected one folder per class: <channel>/<class>/<image>.png|.jpg|.jpeg";
    if let Some(file) = loose.first() {
        let why = if classes.is_empty() {
            format!("{} is not in a class folder; {layout}", file.display())
        } else {
            format!(
                "mixes loose files ({}) with class folders ({}); {layout}",
                file.display(),
                classes.join(", ")
            )
        };
        return Err(Error::data(channel, why));
    }
    if classes.is_empty() {
        return Err(Error::data(
            channel,
            format!("empty: no images in {}; {layout}", dir.display()),
        ));
    }
    let mut items = Vec::new();
    for (index, class) in classes.iter().enumerate() {
        let label = match known {
            None => index,
            Some(known) => known.iter().position(|k| k == class).ok_or_else(|| {
                Error::data(
                    channel,
                    format!(
                        "class folder {class:?} is not a class of the train channel ({})",
                        known.join(", ")
                    ),
                )
            })?,
        };
        for file in class_images(channel, class, &dir.join(class))? {
            items.push((file, label as f32));
        }
    }
    Ok(Listing {
        classes: Some(known.map_or(classes, <[String]>::to_vec)),
        items,
    })
}

/// A `.lst` file: `index<TAB>label<TAB>path` lines, paths relative to the
/// channel folder; blank lines skipped.
fn read_list(channel: &str, dir: &Path, list: &Path) -> Result<Listing> {
    let text = std::fs::read_to_string(list)
        .map_err(|e| Error::data(channel, format!("{}: cannot read: {e}", list.display())))?;
    let mut items = Vec::new();
    for (n, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let bad =
            |why: &str| Error::data(channel, format!("{} line {}: {why}", list.display(), n + 1));
        let fields: Vec<&str> = line.split('\t').map(str::trim).collect();
        let [_, label, path] = fields[..] else {
            return Err(bad(&format!(
                "{} fields, expected index<TAB>label<TAB>path",
                fields.len()
            )));
        };
        let label: f32 = label
            .parse()
            .ok()
            .filter(|l: &f32| l.is_finite())
            .ok_or_else(|| bad(&format!("label {label:?} is not a number")))?;
        let file = dir.join(path);
        if !file.is_file() {
            return Err(bad(&format!("no file {}", file.display())));
        }
        items.push((file, label));
    }
    if items.is_empty() {
        return Err(Error::data(
            channel,
            format!("empty: {} lists no images", list.display()),
        ));
    }
    Ok(Listing {
        classes: None,
        items,
    })
}

/// Channels, height and width of the rows.
pub type Shape = [u32; 3];

/// Checks an `image_shape` hyperparameter for image files.
pub fn shape_from(values: &[i64]) -> Result<Shape> {
    let bad = |why: String| Error::hyper("image_shape", why);
    let [c, h, w] = values[..] else {
        return Err(bad(format!("{values:?}: expected channels,height,width")));
    };
    if c != 1 && c != 3 {
        return Err(bad(format!(
            "{c} channels: image files are read as 1 (grey) or 3 (RGB) channels"
        )));
    }
    let side = |v: i64| u32::try_from(v).ok().filter(|&v| (1..=65_535).contains(&v));
    match (side(h), side(w)) {
        (Some(h), Some(w)) => Ok([c as u32, h, w]),
        _ => Err(bad(format!(
            "height {h} and width {w} must be between 1 and 65535"
        ))),
    }
}

/// Decodes one image file (its content decides the format, not its name).
pub fn decode(channel: &str, path: &Path) -> Result<DynamicImage> {
    let bad = |why: String| Error::data(channel, format!("{}: {why}", path.display()));
    ImageReader::open(path)
        .map_err(|e| bad(format!("cannot open: {e}")))?
        .with_guessed_format()
        .map_err(|e| bad(format!("cannot read: {e}")))?
        .decode()
        .map_err(|e| bad(format!("not a decodable PNG or JPEG image: {e}")))
}

/// The shape of an image as it is: 1 channel if grey, else 3.
pub fn native_shape(img: &DynamicImage) -> Shape {
    let c = if img.color().has_color() { 3 } else { 1 };
    [c, img.height(), img.width()]
}

/// Appends an image as `shape` (CHW, values in `[0, 1]`) to `out`.
pub fn pixels(img: &DynamicImage, shape: Shape, out: &mut Vec<f32>) {
    let [c, h, w] = shape;
    if c == 1 && img.color().has_color() {
        // Luminance in float (the image crate's conversion rounds to the
        // source's integer type first).
        let rgb = img.to_rgb32f();
        let luma = ImageBuffer::from_fn(rgb.width(), rgb.height(), |x, y| {
            let [r, g, b] = rgb.get_pixel(x, y).0;
            Luma([0.2126 * r + 0.7152 * g + 0.0722 * b])
        });
        chw(&luma, h, w, out);
    } else if c == 1 {
        chw(&img.to_luma32f(), h, w, out);
    } else {
        chw(&img.to_rgb32f(), h, w, out);
    }
}

fn chw<P>(img: &ImageBuffer<P, Vec<f32>>, h: u32, w: u32, out: &mut Vec<f32>)
where
    P: Pixel<Subpixel = f32> + 'static,
{
    let resized;
    let img = if img.dimensions() == (w, h) {
        img
    } else {
        resized = imageops::resize(img, w, h, FilterType::Triangle);
        &resized
    };
    let c = P::CHANNEL_COUNT as usize;
    let raw = img.as_raw();
    for ch in 0..c {
        out.extend(raw.iter().skip(ch).step_by(c).map(|v| v.clamp(0.0, 1.0)));
    }
}

/// Streams the images of `listing` into `sink` as rows (label first when the
/// channel is read with labels), each
/// rank decoding only its own. Without `shape`, the first image's own size
/// and channel count are used for all.
pub(crate) fn read(
    channel: &str,
    listing: &Listing,
    shape: Option<Shape>,
    sink: &mut RowSink<'_>,
) -> Result<()> {
    let shape = match shape {
        Some(s) => s,
        None => match listing.items.first() {
            Some((first, _)) => native_shape(&decode(channel, first)?),
            None => return Ok(()),
        },
    };
    let mut row = Vec::new();
    for (path, label) in &listing.items {
        if sink.skip_other_rank() {
            continue;
        }
        let img = decode(channel, path)?;
        row.clear();
        if sink.opts.has_label {
            row.push(*label);
        }
        pixels(&img, shape, &mut row);
        sink.file = path.clone();
        sink.push(&|| "image".to_string(), &row)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests;
