use std::fs;

use super::*;

fn write(dir: &Path, name: &str, text: &str) {
    fs::write(dir.join(name), text).unwrap();
}

fn read(dir: &Path, opts: &ReadOptions) -> Result<Dataset> {
    read_channel("train", dir, opts)
}

#[test]
fn csv_with_header_and_many_files() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "a.csv", "label,f1,f2\n1,2,3\n0,4.5,-6\n");
    write(dir.path(), "b.csv", "1,7,8\n\n");
    write(dir.path(), ".hidden", "garbage");
    let ds = read(dir.path(), &ReadOptions::default()).unwrap();
    assert_eq!(ds.x.size(), [3, 2]);
    assert_eq!(
        Vec::<f32>::try_from(ds.x.view(-1)).unwrap(),
        [2.0, 3.0, 4.5, -6.0, 7.0, 8.0]
    );
    assert_eq!(
        Vec::<f32>::try_from(ds.y.unwrap()).unwrap(),
        [1.0, 0.0, 1.0]
    );
    assert_eq!(ds.global_rows, 3);
}

#[test]
fn sharding_keeps_every_world_th_row() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "a.csv", "0,0\n1,10\n2,20\n3,30\n4,40\n");
    let opts = ReadOptions {
        rank: 1,
        world: 2,
        ..Default::default()
    };
    let ds = read(dir.path(), &opts).unwrap();
    assert_eq!(Vec::<f32>::try_from(ds.y.unwrap()).unwrap(), [1.0, 3.0]);
    assert_eq!(ds.global_rows, 5);
}

#[test]
fn bad_input_is_an_error_with_file_and_line() {
    let cases = [
        ("1,2\n1,x\n", "line 2: column 2 is \"x\", not a number"),
        ("1,2\n1,nan\n", "line 2: column 2 is NaN"),
        ("1,2\n1,inf\n", "line 2: column 2 is inf"),
        ("1,2,3\n1,2\n", "line 2: 2 columns, but earlier rows have 3"),
        ("1,,3\n", "line 1: column 2 is \"\""),
        ("a,b\n", "empty: the files hold no rows"),
        ("5\n", "needs a label and at least one feature"),
    ];
    for (text, want) in cases {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "a.csv", text);
        let err = read(dir.path(), &ReadOptions::default()).unwrap_err();
        assert!(
            err.to_string().contains(want),
            "{text:?}: {err} lacks {want:?}"
        );
        assert_eq!(err.exit_code(), 2);
    }
}

#[test]
fn missing_and_empty_channels() {
    let dir = tempfile::tempdir().unwrap();
    let err = read(&dir.path().join("nope"), &ReadOptions::default()).unwrap_err();
    assert!(err.to_string().contains("channel train: missing"), "{err}");
    let err = read(dir.path(), &ReadOptions::default()).unwrap_err();
    assert!(err.to_string().contains("channel train: empty"), "{err}");
}

#[test]
fn parquet_matches_csv() {
    use std::sync::Arc;

    use arrow_array::{Float64Array, Int64Array, RecordBatch};
    let dir = tempfile::tempdir().unwrap();
    let batch = RecordBatch::try_from_iter([
        (
            "label",
            Arc::new(Int64Array::from(vec![1, 0, 2])) as arrow_array::ArrayRef,
        ),
        ("a", Arc::new(Float64Array::from(vec![0.5, 1.5, 2.5])) as _),
        (
            "b",
            Arc::new(Float64Array::from(vec![-1.0, -2.0, -3.0])) as _,
        ),
    ])
    .unwrap();
    let file = fs::File::create(dir.path().join("part-0.parquet")).unwrap();
    let mut writer = ::parquet::arrow::ArrowWriter::try_new(file, batch.schema(), None).unwrap();
    writer.write(&batch).unwrap();
    writer.close().unwrap();
    let ds = read(dir.path(), &ReadOptions::default()).unwrap();
    assert_eq!(
        Vec::<f32>::try_from(ds.x.view(-1)).unwrap(),
        [0.5, -1.0, 1.5, -2.0, 2.5, -3.0]
    );
    assert_eq!(
        Vec::<f32>::try_from(ds.y.unwrap()).unwrap(),
        [1.0, 0.0, 2.0]
    );

    let bad = RecordBatch::try_from_iter([
        (
            "label",
            Arc::new(Int64Array::from(vec![1])) as arrow_array::ArrayRef,
        ),
        ("a", Arc::new(Float64Array::from(vec![f64::NAN])) as _),
    ])
    .unwrap();
    let file = fs::File::create(dir.path().join("part-1.parquet")).unwrap();
    let mut writer = ::parquet::arrow::ArrowWriter::try_new(file, bad.schema(), None).unwrap();
    writer.write(&bad).unwrap();
    writer.close().unwrap();
    let err = read(dir.path(), &ReadOptions::default())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("part-1.parquet row 1: 2 columns, but earlier rows have 3"),
        "{err}"
    );
}
