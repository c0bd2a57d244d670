//! Records as Parquet (SPEC §10): one row per record, typed columns: `machine_id` (string),
//! `timestamp` (nanoseconds, UTC), each parameter a double (a string where some record has it
//! as a state), then the `_avg` double of each numeric parameter, in the order of the CSV.

use std::collections::HashMap;
use std::io::Write;
use std::sync::Arc;

use arrow_array::builder::{Float64Builder, StringBuilder, TimestampNanosecondBuilder};
use arrow_array::{ArrayRef, RecordBatch};
use arrow_schema::{DataType, Field, Schema, SchemaRef, TimeUnit};
use parquet::arrow::ArrowWriter;
use parquet::basic::Compression;
use parquet::errors::ParquetError;
use parquet::file::properties::WriterProperties;

use super::csv::{Columns, write_number};
use crate::pipeline::ProcessedRecord;
use crate::reading::Value;

/// Rows per row group: what the writer holds in memory before it writes them out.
const ROW_GROUP: usize = 64 * 1024;

/// A parameter's column: doubles, or strings when some record has the parameter as a state.
enum Column {
    Number(Float64Builder),
    Text(StringBuilder),
}

/// Writes pages of records into one Parquet file.
pub struct ParquetSink<W: Write + Send> {
    writer: ArrowWriter<W>,
    schema: SchemaRef,
    /// Column of each parameter's value (among the parameters) and of its average.
    index: HashMap<String, (usize, Option<usize>)>,
    text: Vec<bool>,
    averages: usize,
}

impl<W: Write + Send> ParquetSink<W> {
    /// A file with the schema of these columns.
    pub fn new(out: W, columns: &Columns) -> Result<Self, ParquetError> {
        let mut fields = vec![
            Field::new("machine_id", DataType::Utf8, false),
            Field::new(
                "timestamp",
                DataType::Timestamp(TimeUnit::Nanosecond, Some("UTC".into())),
                false,
            ),
        ];
        let mut index = HashMap::new();
        let mut text = Vec::new();
        let mut averages = 0;
        for (i, (name, kind)) in columns.params().enumerate() {
            let ty = if kind.state {
                DataType::Utf8
            } else {
                DataType::Float64
            };
            fields.push(Field::new(name, ty, true));
            text.push(kind.state);
            let avg = kind.numeric.then(|| {
                averages += 1;
                averages - 1
            });
            index.insert(name.to_owned(), (i, avg));
        }
        for name in columns.averaged() {
            fields.push(Field::new(format!("{name}_avg"), DataType::Float64, true));
        }
        let schema = Arc::new(Schema::new(fields));
        let props = WriterProperties::builder()
            .set_compression(Compression::SNAPPY)
            .set_max_row_group_row_count(Some(ROW_GROUP))
            .build();
        let writer = ArrowWriter::try_new(out, schema.clone(), Some(props))?;
        Ok(ParquetSink {
            writer,
            schema,
            index,
            text,
            averages,
        })
    }

    /// Writes one page of records as a batch of rows.
    pub fn write(&mut self, records: &[Arc<ProcessedRecord>]) -> Result<(), ParquetError> {
        let n = records.len();
        let mut machines = StringBuilder::with_capacity(n, n * 8);
        let mut times = TimestampNanosecondBuilder::with_capacity(n).with_timezone("UTC");
        let mut params: Vec<Column> = self
            .text
            .iter()
            .map(|t| {
                if *t {
                    Column::Text(StringBuilder::with_capacity(n, n * 4))
                } else {
                    Column::Number(Float64Builder::with_capacity(n))
                }
            })
            .collect();
        let mut avgs: Vec<Float64Builder> = (0..self.averages)
            .map(|_| Float64Builder::with_capacity(n))
            .collect();
        // Which columns this record filled; the others get a null.
        let mut filled = vec![false; params.len()];
        let mut filled_avg = vec![false; avgs.len()];
        let mut number = String::new();
        for r in records {
            machines.append_value(r.machine_id.as_str());
            times.append_value(r.timestamp.as_nanos());
            filled.fill(false);
            filled_avg.fill(false);
            let mut averages = r.averages.iter();
            for f in &r.fields {
                let Some(&(col, avg)) = self.index.get(f.name.as_str()) else {
                    return Err(ParquetError::General(format!(
                        "parameter {:?} has no column",
                        f.name.as_str()
                    )));
                };
                filled[col] = true;
                match (&mut params[col], &f.value) {
                    (Column::Number(b), Value::Number(v)) => b.append_value(*v),
                    (Column::Text(b), Value::Number(v)) => {
                        number.clear();
                        write_number(*v, &mut number);
                        b.append_value(&number);
                    }
                    (Column::Text(b), Value::State(s)) => b.append_value(s),
                    (Column::Number(_), Value::State(_)) => {
                        return Err(ParquetError::General(format!(
                            "parameter {:?} is a state in a record but a number in the columns",
                            f.name.as_str()
                        )));
                    }
                }
                if let Value::Number(_) = f.value {
                    // The averages follow the numeric fields, one each.
                    if let (Some(a), Some(v)) = (avg, averages.next()) {
                        avgs[a].append_value(*v);
                        filled_avg[a] = true;
                    }
                }
            }
            for (col, done) in params.iter_mut().zip(&filled) {
                if !done {
                    match col {
                        Column::Number(b) => b.append_null(),
                        Column::Text(b) => b.append_null(),
                    }
                }
            }
            for (b, done) in avgs.iter_mut().zip(&filled_avg) {
                if !done {
                    b.append_null();
                }
            }
        }
        let mut arrays: Vec<ArrayRef> = vec![Arc::new(machines.finish()), Arc::new(times.finish())];
        arrays.extend(params.into_iter().map(|c| -> ArrayRef {
            match c {
                Column::Number(mut b) => Arc::new(b.finish()),
                Column::Text(mut b) => Arc::new(b.finish()),
            }
        }));
        arrays.extend(
            avgs.into_iter()
                .map(|mut b| -> ArrayRef { Arc::new(b.finish()) }),
        );
        let batch = RecordBatch::try_new(self.schema.clone(), arrays)?;
        self.writer.write(&batch)
    }

    /// Writes the footer; the file is complete.
    pub fn finish(self) -> Result<W, ParquetError> {
        self.writer.into_inner()
    }
}
