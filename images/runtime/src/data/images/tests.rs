use std::fs;

use image::{GrayImage, Luma, Rgb, RgbImage};

use super::*;
use crate::data::{Dataset, ReadOptions, read_channel};

fn grey(dir: &Path, rel: &str, w: u32, h: u32, values: &[u8]) {
    let path = dir.join(rel);
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    GrayImage::from_raw(w, h, values.to_vec())
        .unwrap()
        .save(&path)
        .unwrap();
}

fn rgb(dir: &Path, rel: &str, w: u32, h: u32, pixel: [u8; 3]) {
    let path = dir.join(rel);
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    RgbImage::from_pixel(w, h, Rgb(pixel)).save(&path).unwrap();
}

fn opts(shape: &[i64]) -> ReadOptions {
    ReadOptions {
        image_shape: Some(shape.to_vec()),
        ..Default::default()
    }
}

fn read(dir: &Path, opts: &ReadOptions) -> Result<Dataset> {
    read_channel("train", dir, opts)
}

fn values(t: &tch::Tensor) -> Vec<f32> {
    Vec::<f32>::try_from(t.view(-1)).unwrap()
}

/// Equal within float rounding.
fn close(got: &[f32], want: &[f32]) {
    assert_eq!(got.len(), want.len(), "{got:?} vs {want:?}");
    for (g, w) in got.iter().zip(want) {
        assert!((g - w).abs() < 1e-6, "{got:?} vs {want:?}");
    }
}

fn names(listing: &Listing, dir: &Path) -> Vec<(String, f32)> {
    listing
        .items
        .iter()
        .map(|(p, l)| {
            let rel = p.strip_prefix(dir).unwrap().to_string_lossy().into_owned();
            (rel, *l)
        })
        .collect()
}

#[test]
fn class_folders_are_labelled_in_sorted_order() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    grey(d, "zebra/b.png", 1, 1, &[0]);
    grey(d, "zebra/a.png", 1, 1, &[0]);
    grey(d, "cat/x.jpg", 1, 1, &[0]);
    grey(d, "cat/deeper/y.PNG", 1, 1, &[0]);
    grey(d, "dog/z.jpeg", 1, 1, &[0]);
    fs::write(d.join("dog/.DS_Store"), "junk").unwrap();
    fs::write(d.join(".hidden"), "junk").unwrap();
    let listing = scan("train", d, None).unwrap();
    assert_eq!(listing.classes.as_deref().unwrap(), ["cat", "dog", "zebra"]);
    assert_eq!(
        names(&listing, d),
        [
            ("cat/deeper/y.PNG".to_string(), 0.0),
            ("cat/x.jpg".to_string(), 0.0),
            ("dog/z.jpeg".to_string(), 1.0),
            ("zebra/a.png".to_string(), 2.0),
            ("zebra/b.png".to_string(), 2.0),
        ]
    );
}

#[test]
fn evaluation_channels_use_the_train_labels() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    grey(d, "zebra/a.png", 1, 1, &[0]);
    grey(d, "cat/b.png", 1, 1, &[0]);
    let train: Vec<String> = ["ant", "cat", "dog", "zebra"].map(String::from).into();
    let listing = scan("validation", d, Some(&train)).unwrap();
    assert_eq!(listing.classes.as_deref().unwrap(), &train[..]);
    assert_eq!(
        names(&listing, d),
        [
            ("cat/b.png".to_string(), 1.0),
            ("zebra/a.png".to_string(), 3.0)
        ]
    );
    grey(d, "emu/c.png", 1, 1, &[0]);
    let err = scan("validation", d, Some(&train)).unwrap_err().to_string();
    assert!(
        err.contains("channel validation: class folder \"emu\" is not a class of the train channel (ant, cat, dog, zebra)"),
        "{err}"
    );
}

#[test]
fn bad_layouts_are_clear_errors() {
    let check = |setup: &dyn Fn(&Path), want: &str| {
        let dir = tempfile::tempdir().unwrap();
        setup(dir.path());
        let err = read(dir.path(), &opts(&[1, 2, 2])).unwrap_err();
        assert!(err.to_string().contains(want), "{err} lacks {want:?}");
        assert_eq!(err.exit_code(), 2, "{err}");
    };
    check(
        &|d| {
            grey(d, "a/x.png", 1, 1, &[0]);
            fs::create_dir_all(d.join("b")).unwrap();
        },
        "class folder \"b\" is empty: no images in",
    );
    check(
        &|d| {
            grey(d, "a/x.png", 1, 1, &[0]);
            grey(d, "loose.png", 1, 1, &[0]);
        },
        "mixes loose files (",
    );
    check(
        &|d| grey(d, "loose.png", 1, 1, &[0]),
        "loose.png is not in a class folder; expected one folder per class",
    );
    check(
        &|d| {
            grey(d, "a/x.png", 1, 1, &[0]);
            fs::write(d.join("a/notes.txt"), "hello").unwrap();
        },
        "notes.txt: not an image file (expected .png, .jpg or .jpeg)",
    );
    check(
        &|d| {
            grey(d, "a/x.png", 1, 1, &[0]);
            fs::write(d.join("a/broken.jpg"), "not a jpeg at all").unwrap();
        },
        "broken.jpg: not a decodable PNG or JPEG image",
    );
    check(
        &|d| {
            grey(d, "a/x.png", 1, 1, &[0]);
            fs::write(d.join("one.lst"), "").unwrap();
            fs::write(d.join("two.lst"), "").unwrap();
        },
        "several .lst files",
    );
    // No images at all, with an image ContentType.
    let dir = tempfile::tempdir().unwrap();
    fs::create_dir_all(dir.path().join("a")).unwrap();
    fs::write(dir.path().join("a/.keep"), "").unwrap();
    let o = ReadOptions {
        content_type: Some("application/x-image".into()),
        ..opts(&[1, 1, 1])
    };
    let err = read(dir.path(), &o).unwrap_err().to_string();
    assert!(err.contains("class folder \"a\" is empty"), "{err}");
    // image_shape that image files cannot take.
    let dir = tempfile::tempdir().unwrap();
    grey(dir.path(), "a/x.png", 1, 1, &[0]);
    let err = read(dir.path(), &opts(&[2, 4, 4])).unwrap_err().to_string();
    assert!(
        err.contains("hyperparameter image_shape: 2 channels"),
        "{err}"
    );
}

#[test]
fn grey_pixels_are_scaled_to_unit_range_in_chw_order() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    grey(d, "a/x.png", 3, 2, &[0, 51, 102, 153, 204, 255]);
    let ds = read(d, &opts(&[1, 2, 3])).unwrap();
    assert_eq!(ds.x.size(), [1, 6]);
    close(&values(&ds.x), &[0.0, 0.2, 0.4, 0.6, 0.8, 1.0]);
    assert_eq!(values(ds.y.as_ref().unwrap()), [0.0]);
    assert_eq!(ds.classes.as_deref().unwrap(), ["a"]);
    // Grey to RGB: the same plane three times.
    let ds = read(d, &opts(&[3, 2, 3])).unwrap();
    let v = values(&ds.x);
    assert_eq!(v.len(), 18);
    for plane in v.chunks(6) {
        close(plane, &[0.0, 0.2, 0.4, 0.6, 0.8, 1.0]);
    }
}

#[test]
fn rgb_is_kept_as_planes_or_turned_into_luminance() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    rgb(d, "a/x.png", 2, 1, [255, 51, 0]);
    let ds = read(d, &opts(&[3, 1, 2])).unwrap();
    close(&values(&ds.x), &[1.0, 1.0, 0.2, 0.2, 0.0, 0.0]);
    let ds = read(d, &opts(&[1, 1, 2])).unwrap();
    let want = 0.2126 + 0.7152 * 0.2;
    for v in values(&ds.x) {
        assert!((v - want).abs() < 1e-5, "{v} vs {want}");
    }
}

#[test]
fn resizing_is_bilinear() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // Shrinking 2x2 to 1x1 averages the four pixels.
    grey(d, "a/x.png", 2, 2, &[0, 51, 102, 255]);
    let ds = read(d, &opts(&[1, 1, 1])).unwrap();
    let v = values(&ds.x);
    assert!((v[0] - 0.4).abs() < 1e-5, "{v:?}");
    // Enlarging 1x2 to 1x4: the ends keep their values, the middle is
    // interpolated between them, monotonically.
    fs::remove_dir_all(d.join("a")).unwrap();
    grey(d, "a/x.png", 2, 1, &[0, 255]);
    let ds = read(d, &opts(&[1, 1, 4])).unwrap();
    let v = values(&ds.x);
    assert_eq!(v.len(), 4);
    assert!(v[0] == 0.0 && v[3] == 1.0, "{v:?}");
    assert!(0.0 < v[1] && v[1] < v[2] && v[2] < 1.0, "{v:?}");
}

#[test]
fn jpeg_decodes_close_to_its_colour() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    rgb(d, "red/x.jpg", 16, 16, [255, 0, 0]);
    rgb(d, "grey/y.jpeg", 16, 16, [128, 128, 128]);
    let ds = read(d, &opts(&[3, 4, 4])).unwrap();
    assert_eq!(ds.x.size(), [2, 48]);
    assert_eq!(values(ds.y.as_ref().unwrap()), [0.0, 1.0]);
    let v = values(&ds.x);
    let close = |got: &[f32], want: f32| got.iter().all(|g| (g - want).abs() < 0.03);
    assert!(close(&v[..48], 128.0 / 255.0), "{:?}", &v[..48]);
    assert!(close(&v[48..64], 1.0) && close(&v[64..96], 0.0), "{v:?}");
}

#[test]
fn without_image_shape_the_first_image_sets_it() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    grey(d, "a/x.png", 2, 3, &[0; 6]);
    rgb(d, "b/y.png", 4, 4, [255, 255, 255]);
    let ds = read(d, &ReadOptions::default()).unwrap();
    assert_eq!(ds.x.size(), [2, 6]);
    assert_eq!(values(&ds.x)[6..], [1.0; 6]);
}

#[test]
fn ranks_shard_images_and_decode_only_their_own() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    for (i, class) in ["a", "a", "b", "c", "c"].iter().enumerate() {
        grey(d, &format!("{class}/{i}.png"), 1, 1, &[i as u8 * 50]);
    }
    // Global row 2 (b/2.png) cannot be decoded: only rank 0 of 2 reads it.
    fs::write(d.join("b/2.png"), "garbage").unwrap();
    let rank = |r| ReadOptions {
        rank: r,
        world: 2,
        ..opts(&[1, 1, 1])
    };
    let ds = read(d, &rank(1)).unwrap();
    close(&values(&ds.x), &[50.0 / 255.0, 150.0 / 255.0]);
    assert_eq!(values(ds.y.as_ref().unwrap()), [0.0, 2.0]);
    assert_eq!(ds.global_rows, 5);
    let err = read(d, &rank(0)).unwrap_err().to_string();
    assert!(err.contains("b/2.png: not a decodable"), "{err}");
}

#[test]
fn content_type_or_files_select_images() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    for ct in ["application/x-image", "image/png", "image/jpeg", "image/*"] {
        assert!(is_image_content_type(ct), "{ct}");
    }
    assert!(!is_image_content_type("text/csv"));
    // An image ContentType reads class folders whatever the file names say.
    let png = d.join("a/x.data");
    fs::create_dir_all(png.parent().unwrap()).unwrap();
    GrayImage::from_pixel(1, 1, Luma([255]))
        .save_with_format(&png, image::ImageFormat::Png)
        .unwrap();
    assert!(read(d, &opts(&[1, 1, 1])).is_err(), "read as CSV");
    let o = ReadOptions {
        content_type: Some("image/png".into()),
        ..opts(&[1, 1, 1])
    };
    let err = read(d, &o).unwrap_err().to_string();
    assert!(err.contains("x.data: not an image file"), "{err}");
    // A CSV ContentType wins over image files.
    fs::rename(&png, d.join("a/x.png")).unwrap();
    assert_eq!(values(&read(d, &opts(&[1, 1, 1])).unwrap().x), [1.0]);
    let o = ReadOptions {
        content_type: Some("text/csv".into()),
        ..opts(&[1, 1, 1])
    };
    assert!(read(d, &o).is_err());
}

#[test]
fn list_files_give_labels_and_order() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    grey(d, "img/p.png", 1, 1, &[255]);
    grey(d, "img/q.png", 1, 1, &[0]);
    fs::write(
        d.join("train.lst"),
        "0\t4\timg/q.png\n\n1\t2.0\timg/p.png\n",
    )
    .unwrap();
    let ds = read(d, &opts(&[1, 1, 1])).unwrap();
    assert_eq!(values(&ds.x), [0.0, 1.0]);
    assert_eq!(values(ds.y.as_ref().unwrap()), [4.0, 2.0]);
    assert!(ds.classes.is_none());
    for (text, want) in [
        ("0\t1\timg/none.png\n", "train.lst line 1: no file"),
        (
            "0\tcat\timg/p.png\n",
            "train.lst line 1: label \"cat\" is not a number",
        ),
        (
            "0 1 img/p.png\n",
            "train.lst line 1: 1 fields, expected index<TAB>label<TAB>path",
        ),
        ("\n", "lists no images"),
    ] {
        fs::write(d.join("train.lst"), text).unwrap();
        let err = read(d, &opts(&[1, 1, 1])).unwrap_err().to_string();
        assert!(err.contains(want), "{text:?}: {err} lacks {want:?}");
    }
}
