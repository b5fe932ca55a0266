//! CSV channels: label in the first column, an optional header line (a first
//! line in which no field is a number), records streamed one at a time.

use std::path::Path;

use super::RowSink;
use crate::error::{Error, Result};

/// Streams one CSV file into `sink`.
pub(crate) fn read(path: &Path, sink: &mut RowSink<'_>) -> Result<()> {
    let file = std::fs::File::open(path).map_err(Error::io(path))?;
    read_from(file, sink)
}

/// Streams CSV from any reader (a file, an object in a store) into `sink`.
pub(crate) fn read_from(input: impl std::io::Read, sink: &mut RowSink<'_>) -> Result<()> {
    let mut reader = ::csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .trim(::csv::Trim::All)
        .buffer_capacity(1 << 20)
        .from_reader(input);
    let mut record = ::csv::ByteRecord::new();
    let mut values = Vec::new();
    let mut first = true;
    loop {
        let more = reader
            .read_byte_record(&mut record)
            .map_err(|e| sink.error("", format!("not valid CSV: {e}")))?;
        if !more {
            return Ok(());
        }
        let line = record.position().map_or(0, |p| p.line());
        if record.len() == 1 && record[0].is_empty() {
            continue; // blank line
        }
        values.clear();
        let mut bad = None;
        for (i, field) in record.iter().enumerate() {
            match parse_f32(field) {
                Some(v) => values.push(v),
                None => {
                    bad.get_or_insert(i);
                }
            }
        }
        if let Some(col) = bad {
            if first && values.is_empty() {
                first = false;
                continue; // a header
            }
            let text = String::from_utf8_lossy(&record[col]);
            return Err(sink.error(
                &format!("line {line}"),
                format!("column {} is {text:?}, not a number", col + 1),
            ));
        }
        first = false;
        sink.push(&|| format!("line {line}"), &values)?;
    }
}

fn parse_f32(field: &[u8]) -> Option<f32> {
    std::str::from_utf8(field).ok()?.parse::<f32>().ok()
}
