//! Parquet channels: every column numeric, the first one the label; read one
//! record batch at a time.

use std::path::Path;

use arrow_array::cast::AsArray;
use arrow_array::types::{
    Float32Type, Float64Type, Int8Type, Int16Type, Int32Type, Int64Type, UInt8Type, UInt16Type,
    UInt32Type, UInt64Type,
};
use arrow_array::{Array, ArrayRef};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

use super::RowSink;
use crate::error::{Error, Result};

/// Streams one Parquet file into `sink`.
pub(crate) fn read(path: &Path, sink: &mut RowSink<'_>) -> Result<()> {
    let file = std::fs::File::open(path).map_err(Error::io(path))?;
    let reader = ParquetRecordBatchReaderBuilder::try_new(file)
        .map_err(|e| sink.error("", format!("not a Parquet file: {e}")))?
        .with_batch_size(8192)
        .build()
        .map_err(|e| sink.error("", e))?;
    let mut row0 = 0usize;
    let mut row = Vec::new();
    for batch in reader {
        let batch = batch.map_err(|e| sink.error(&format!("after row {row0}"), e))?;
        let schema = batch.schema();
        let columns: Vec<Vec<f32>> = batch
            .columns()
            .iter()
            .enumerate()
            .map(|(i, c)| {
                to_f32(c)
                    .map_err(|why| sink.error(&format!("column {:?}", schema.field(i).name()), why))
            })
            .collect::<Result<_>>()?;
        for r in 0..batch.num_rows() {
            row.clear();
            row.extend(columns.iter().map(|c| c[r]));
            let at = row0 + r + 1;
            sink.push(&|| format!("row {at}"), &row)?;
        }
        row0 += batch.num_rows();
    }
    Ok(())
}

fn to_f32(array: &ArrayRef) -> std::result::Result<Vec<f32>, String> {
    if array.null_count() > 0 {
        return Err(format!("{} missing (null) values", array.null_count()));
    }
    macro_rules! prim {
        ($($t:ty),*) => {
            $(if let Some(a) = array.as_primitive_opt::<$t>() {
                return Ok(a.values().iter().map(|&v| v as f32).collect());
            })*
        };
    }
    prim!(
        Float32Type,
        Float64Type,
        Int8Type,
        Int16Type,
        Int32Type,
        Int64Type,
        UInt8Type,
        UInt16Type,
        UInt32Type,
        UInt64Type
    );
    Err(format!("type {} is not numeric", array.data_type()))
}
