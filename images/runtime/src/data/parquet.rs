//! Parquet channels: every column numeric, the first one the label; read one
//! record batch at a time.

use std::path::Path;

use arrow_array::cast::AsArray;
use arrow_array::types::{
    Float32Type, Float64Type, Int8Type, Int16Type, Int32Type, Int64Type, UInt8Type, UInt16Type,
    UInt32Type, UInt64Type,
};
use std::ops::Range;
use std::sync::Arc;

use arrow_array::{Array, ArrayRef, RecordBatch};
use bytes::Bytes;
use futures::future::BoxFuture;
use futures::{FutureExt, StreamExt};
use object_store::{ObjectStore, ObjectStoreExt};
use parquet::arrow::ParquetRecordBatchStreamBuilder;
use parquet::arrow::arrow_reader::{ArrowReaderOptions, ParquetRecordBatchReaderBuilder};
use parquet::arrow::async_reader::AsyncFileReader;
use parquet::errors::ParquetError;
use parquet::file::metadata::{ParquetMetaData, ParquetMetaDataReader};

use super::RowSink;
use crate::error::{Error, Result};
use crate::storage::{self, Object, Remote};

const BATCH_ROWS: usize = 8192;

/// Streams one Parquet file into `sink`.
pub(crate) fn read(path: &Path, sink: &mut RowSink<'_>) -> Result<()> {
    let file = std::fs::File::open(path).map_err(Error::io(path))?;
    let reader = ParquetRecordBatchReaderBuilder::try_new(file)
        .map_err(|e| sink.error("", format!("not a Parquet file: {e}")))?
        .with_batch_size(BATCH_ROWS)
        .build()
        .map_err(|e| sink.error("", e))?;
    read_batches(reader.map(|b| b.map_err(|e| e.to_string())), sink)
}

/// Streams one Parquet object of a store into `sink`: the footer, then one
/// row group at a time, with range requests.
pub(crate) fn read_remote(remote: &Remote, object: &Object, sink: &mut RowSink<'_>) -> Result<()> {
    let (store, path) = remote.object(&object.key);
    let input = RangeReader {
        store,
        path,
        size: object.size,
    };
    let mut stream = storage::block_on(async {
        ParquetRecordBatchStreamBuilder::new(input)
            .await?
            .with_batch_size(BATCH_ROWS)
            .build()
    })
    .map_err(|e| sink.error("", format!("not a Parquet file: {e}")))?;
    let batches = std::iter::from_fn(|| storage::block_on(stream.next()));
    read_batches(batches.map(|b| b.map_err(|e| e.to_string())), sink)
}

/// An object read by byte ranges: the footer first, then the row groups'
/// column chunks.
struct RangeReader {
    store: Arc<dyn ObjectStore>,
    path: object_store::path::Path,
    size: u64,
}

impl AsyncFileReader for RangeReader {
    fn get_bytes(&mut self, range: Range<u64>) -> BoxFuture<'_, parquet::errors::Result<Bytes>> {
        async move {
            self.store
                .get_range(&self.path, range)
                .await
                .map_err(|e| ParquetError::External(Box::new(e)))
        }
        .boxed()
    }

    fn get_byte_ranges(
        &mut self,
        ranges: Vec<Range<u64>>,
    ) -> BoxFuture<'_, parquet::errors::Result<Vec<Bytes>>> {
        async move {
            self.store
                .get_ranges(&self.path, &ranges)
                .await
                .map_err(|e| ParquetError::External(Box::new(e)))
        }
        .boxed()
    }

    fn get_metadata<'a>(
        &'a mut self,
        options: Option<&'a ArrowReaderOptions>,
    ) -> BoxFuture<'a, parquet::errors::Result<Arc<ParquetMetaData>>> {
        async move {
            let size = self.size;
            let metadata = ParquetMetaDataReader::new()
                .with_metadata_options(options.map(|o| o.metadata_options().clone()))
                .load_and_finish(self, size)
                .await?;
            Ok(Arc::new(metadata))
        }
        .boxed()
    }
}

fn read_batches(
    batches: impl Iterator<Item = std::result::Result<RecordBatch, String>>,
    sink: &mut RowSink<'_>,
) -> Result<()> {
    let mut row0 = 0usize;
    let mut row = Vec::new();
    for batch in batches {
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
