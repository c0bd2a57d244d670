//! Records as CSV (SPEC §10): `machine_id,timestamp`, every parameter of the rows in name
//! order, then the `_avg` column of each numeric one, in name order; RFC 4180 quoting, UTC
//! times, numbers written as the JSON answer writes them.

use std::collections::{BTreeMap, HashMap};

use crate::pipeline::ProcessedRecord;
use crate::reading::Value;

/// How a parameter appears in the rows: as a number, as a state, or as both.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Kind {
    /// Some row has it as a number (so it has an `_avg` column).
    pub numeric: bool,
    /// Some row has it as a state.
    pub state: bool,
}

/// The parameters met so far, by name: what the header of a CSV or the schema of a Parquet
/// file is made from before the first row is written.
#[derive(Debug, Clone, Default)]
pub struct Columns {
    params: BTreeMap<String, Kind>,
}

impl Columns {
    /// The columns of these records.
    pub fn of<'a>(records: impl IntoIterator<Item = &'a ProcessedRecord>) -> Self {
        let mut c = Columns::default();
        for r in records {
            c.add(r);
        }
        c
    }

    /// Takes the parameters of one more record.
    pub fn add(&mut self, r: &ProcessedRecord) {
        for f in &r.fields {
            // Looked up by &str first: most records bring no new name, so no allocation.
            let kind = match self.params.get_mut(f.name.as_str()) {
                Some(k) => k,
                None => self.params.entry(f.name.as_str().to_owned()).or_default(),
            };
            match f.value {
                Value::Number(_) => kind.numeric = true,
                Value::State(_) => kind.state = true,
            }
        }
    }

    /// Every parameter in name order, with how it appears.
    pub fn params(&self) -> impl Iterator<Item = (&str, Kind)> {
        self.params.iter().map(|(n, k)| (n.as_str(), *k))
    }

    /// The numeric parameters in name order: those with an `_avg` column.
    pub fn averaged(&self) -> impl Iterator<Item = &str> {
        self.params().filter(|(_, k)| k.numeric).map(|(n, _)| n)
    }

    /// The header row: `machine_id`, `timestamp`, the parameters, their `_avg` columns.
    pub fn header(&self) -> Vec<String> {
        let mut h = vec!["machine_id".to_owned(), "timestamp".to_owned()];
        h.extend(self.params.keys().cloned());
        h.extend(self.averaged().map(|n| format!("{n}_avg")));
        h
    }
}

/// Writes a number as the JSON answer does: integers below 2^53 without a fraction, others
/// in the shortest form that reads back to the same double.
pub fn write_number(v: f64, out: &mut String) {
    if v.fract() == 0.0 && v.abs() < 9_007_199_254_740_992.0 {
        out.push_str(itoa::Buffer::new().format(v as i64));
    } else {
        out.push_str(ryu::Buffer::new().format(v));
    }
}

/// Turns records into CSV bytes, a row at a time, into a buffer the caller takes in pieces:
/// what a streamed answer or an export file is written from.
pub struct CsvEncoder {
    writer: csv::Writer<Vec<u8>>,
    /// Column of each parameter's value and, if numeric, of its average.
    index: HashMap<String, (usize, Option<usize>)>,
    cells: Vec<String>,
}

impl CsvEncoder {
    /// An encoder for these columns, with the header row already written.
    pub fn new(columns: &Columns) -> Result<Self, csv::Error> {
        let header = columns.header();
        let n_params = columns.params.len();
        let mut index = HashMap::with_capacity(n_params);
        let mut avg_col = 2 + n_params;
        for (i, (name, kind)) in columns.params().enumerate() {
            let avg = kind.numeric.then(|| {
                avg_col += 1;
                avg_col - 1
            });
            index.insert(name.to_owned(), (2 + i, avg));
        }
        let mut writer = new_writer();
        writer.write_record(&header)?;
        Ok(CsvEncoder {
            writer,
            index,
            cells: vec![String::new(); header.len()],
        })
    }

    /// Writes one record's row. A parameter outside the columns is an error: the columns must
    /// have been taken from the same records.
    pub fn write(&mut self, r: &ProcessedRecord) -> Result<(), csv::Error> {
        for c in &mut self.cells {
            c.clear();
        }
        self.cells[0].push_str(r.machine_id.as_str());
        r.timestamp.write_rfc3339(&mut self.cells[1]);
        let mut averages = r.averages.iter();
        for f in &r.fields {
            let Some(&(col, avg)) = self.index.get(f.name.as_str()) else {
                return Err(csv::Error::from(std::io::Error::other(format!(
                    "parameter {:?} has no column",
                    f.name.as_str()
                ))));
            };
            match &f.value {
                Value::Number(v) => {
                    write_number(*v, &mut self.cells[col]);
                    if let (Some(avg_col), Some(a)) = (avg, averages.next()) {
                        write_number(*a, &mut self.cells[avg_col]);
                    }
                }
                Value::State(s) => self.cells[col].push_str(s),
            }
        }
        self.writer.write_record(&self.cells)
    }

    /// How many bytes wait to be taken.
    pub fn pending(&self) -> usize {
        self.writer.get_ref().len()
    }

    /// Takes the bytes written so far.
    pub fn take(&mut self) -> Result<Vec<u8>, csv::Error> {
        // The csv writer lends no mutable access to its output, so a fresh one takes over.
        let full = std::mem::replace(&mut self.writer, new_writer());
        full.into_inner()
            .map_err(|e| csv::Error::from(std::io::Error::other(e.error().to_string())))
    }
}

/// A CSV writer of RFC 4180 (CRLF line ends, quotes only where needed) into memory.
fn new_writer() -> csv::Writer<Vec<u8>> {
    csv::WriterBuilder::new()
        .terminator(csv::Terminator::CRLF)
        .from_writer(Vec::with_capacity(64 * 1024))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::Pipeline;
    use crate::reading::{MachineId, parse_reading};

    fn records(lines: &[&str]) -> Vec<ProcessedRecord> {
        let mut p = Pipeline::new(2, MachineId::parse("m").unwrap());
        lines
            .iter()
            .filter_map(|l| {
                match p.process(
                    parse_reading(l.as_bytes()).unwrap(),
                    crate::timestamp::Timestamp::now(),
                ) {
                    crate::pipeline::Outcome::Record(r) => Some(r),
                    crate::pipeline::Outcome::Duplicate => None,
                }
            })
            .collect()
    }

    #[test]
    fn header_orders_parameters_then_averages_and_quotes_cells() {
        let rs = records(&[
            r#"{"timestamp": "2026-01-01T00:00:00Z", "speed": 10, "status": "RUN, \"fast\"", "temp": 1.5}"#,
            r#"{"timestamp": "2026-01-01T00:00:01.5Z", "alpha": 3, "speed": 20}"#,
        ]);
        let mut e = CsvEncoder::new(&Columns::of(&rs)).unwrap();
        for r in &rs {
            e.write(r).unwrap();
        }
        let text = String::from_utf8(e.take().unwrap()).unwrap();
        assert_eq!(
            text,
            "machine_id,timestamp,alpha,speed,status,temp,alpha_avg,speed_avg,temp_avg\r\n\
             m,2026-01-01T00:00:00Z,,10,\"RUN, \"\"fast\"\"\",1.5,,10,1.5\r\n\
             m,2026-01-01T00:00:01.500Z,3,20,,,3,15,\r\n"
        );
    }
}
