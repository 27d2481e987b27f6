//! Numeric CSV tables for the offline CLI: a header row, then one sample per line.
//!
//! Deliberately strict: every kept cell must be a finite number, every row must have as many
//! cells as the header, and every error names its line (1-based, the header is line 1).
//! Excluded columns (ids, timestamps, labels) are carried but not parsed; quoting is not
//! supported.

use std::io::BufRead;

use ndarray::Array2;

use super::model::Schema;

/// Why a CSV cannot be used.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum DatasetError {
    /// No header line.
    #[error("the input is empty (no header line)")]
    Empty,
    /// A header but no data rows.
    #[error("the input has a header but no data rows")]
    NoRows,
    /// A header cell is empty or repeated.
    #[error("line 1: column {0:?} is empty or repeated in the header")]
    BadHeader(String),
    /// An excluded or label column that is not in the header.
    #[error("column {0:?} is not in the header")]
    UnknownColumn(String),
    /// Every column is excluded.
    #[error("no feature columns left after exclusions")]
    NoFeatures,
    /// A row with the wrong number of cells.
    #[error("line {line}: expected {expected} cells as in the header, found {found}")]
    Ragged {
        /// 1-based line.
        line: usize,
        /// Header cells.
        expected: usize,
        /// Cells on this line.
        found: usize,
    },
    /// A cell that is not a finite number.
    #[error("line {line}, column {column:?}: {value:?} is not a finite number")]
    NotNumeric {
        /// 1-based line.
        line: usize,
        /// Column name.
        column: String,
        /// The cell.
        value: String,
    },
    /// A label that is not 0/1/true/false.
    #[error("line {line}, label column {column:?}: {value:?} is not 0, 1, true or false")]
    BadLabel {
        /// 1-based line.
        line: usize,
        /// Column name.
        column: String,
        /// The cell.
        value: String,
    },
    /// Reading failed.
    #[error("line {line}: {message}")]
    Io {
        /// 1-based line.
        line: usize,
        /// What the reader said.
        message: String,
    },
}

/// A parsed table: the feature schema, the feature matrix, and labels when asked for.
#[derive(Debug, Clone, PartialEq)]
pub struct Dataset {
    /// Names of the kept columns, in file order.
    pub schema: Schema,
    /// One row per data line.
    pub data: Array2<f64>,
    /// The label column, when one was named.
    pub labels: Option<Vec<bool>>,
}

impl Dataset {
    /// Reads a CSV, dropping the `exclude` columns and reading `label` (also dropped from the
    /// features) as booleans.
    pub fn from_csv(
        input: impl BufRead,
        exclude: &[String],
        label: Option<&str>,
    ) -> Result<Self, DatasetError> {
        let mut lines = input.lines().enumerate();
        let header = loop {
            match lines.next() {
                None => return Err(DatasetError::Empty),
                Some((i, line)) => {
                    let line = line.map_err(|e| io_error(i, &e))?;
                    if !line.trim().is_empty() {
                        break line;
                    }
                }
            }
        };
        let columns: Vec<String> = header.split(',').map(|c| c.trim().to_owned()).collect();
        for (i, c) in columns.iter().enumerate() {
            if c.is_empty() || columns[..i].contains(c) {
                return Err(DatasetError::BadHeader(c.clone()));
            }
        }
        let position = |name: &str| {
            columns
                .iter()
                .position(|c| c == name)
                .ok_or_else(|| DatasetError::UnknownColumn(name.to_owned()))
        };
        let mut dropped = vec![false; columns.len()];
        for name in exclude {
            dropped[position(name)?] = true;
        }
        let label_at = label.map(position).transpose()?;
        if let Some(l) = label_at {
            dropped[l] = true;
        }
        let kept: Vec<usize> = (0..columns.len()).filter(|i| !dropped[*i]).collect();
        if kept.is_empty() {
            return Err(DatasetError::NoFeatures);
        }
        let mut values = Vec::new();
        let mut labels = Vec::new();
        let mut rows = 0;
        for (i, line) in lines {
            let line = line.map_err(|e| io_error(i, &e))?;
            let n = i + 1;
            if line.trim().is_empty() {
                continue;
            }
            let cells: Vec<&str> = line.split(',').map(str::trim).collect();
            if cells.len() != columns.len() {
                return Err(DatasetError::Ragged {
                    line: n,
                    expected: columns.len(),
                    found: cells.len(),
                });
            }
            for &k in &kept {
                values.push(
                    parse_number(cells[k]).ok_or_else(|| DatasetError::NotNumeric {
                        line: n,
                        column: columns[k].clone(),
                        value: cells[k].to_owned(),
                    })?,
                );
            }
            if let Some(l) = label_at {
                labels.push(parse_label(cells[l]).ok_or_else(|| DatasetError::BadLabel {
                    line: n,
                    column: columns[l].clone(),
                    value: cells[l].to_owned(),
                })?);
            }
            rows += 1;
        }
        if rows == 0 {
            return Err(DatasetError::NoRows);
        }
        let names = kept.iter().map(|k| columns[*k].clone()).collect();
        let data =
            Array2::from_shape_vec((rows, kept.len()), values).map_err(|e| DatasetError::Io {
                line: 0,
                message: e.to_string(),
            })?;
        Ok(Self {
            schema: Schema::new(names),
            data,
            labels: label_at.map(|_| labels),
        })
    }
}

fn io_error(index: usize, e: &std::io::Error) -> DatasetError {
    DatasetError::Io {
        line: index + 1,
        message: e.to_string(),
    }
}

/// A finite number; Rust's parser also takes "nan" and "inf", which are refused here.
fn parse_number(cell: &str) -> Option<f64> {
    cell.parse::<f64>().ok().filter(|v| v.is_finite())
}

fn parse_label(cell: &str) -> Option<bool> {
    match cell.to_ascii_lowercase().as_str() {
        "1" | "1.0" | "true" => Some(true),
        "0" | "0.0" | "false" => Some(false),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str, exclude: &[&str], label: Option<&str>) -> Result<Dataset, DatasetError> {
        let exclude: Vec<String> = exclude.iter().map(|s| (*s).to_owned()).collect();
        Dataset::from_csv(text.as_bytes(), &exclude, label)
    }

    #[test]
    fn keeps_numeric_columns_and_labels() {
        let d = parse("id,a,b,y\nx1,1,2.5,0\nx2,-3,4e2,1\n", &["id"], Some("y")).unwrap();
        assert_eq!(d.schema.names(), ["a", "b"]);
        assert_eq!(d.data, ndarray::array![[1.0, 2.5], [-3.0, 400.0]]);
        assert_eq!(d.labels, Some(vec![false, true]));
    }

    #[test]
    fn errors_name_the_line() {
        assert_eq!(parse("", &[], None), Err(DatasetError::Empty));
        assert_eq!(parse("a,b\n", &[], None), Err(DatasetError::NoRows));
        assert_eq!(
            parse("a,b\n1,2\n3\n", &[], None),
            Err(DatasetError::Ragged {
                line: 3,
                expected: 2,
                found: 1
            })
        );
        let e = parse("a,b\n1,2\n3,x\n", &[], None).unwrap_err();
        assert_eq!(
            e.to_string(),
            "line 3, column \"b\": \"x\" is not a finite number"
        );
        assert!(matches!(
            parse("a,b\n1,NaN\n", &[], None),
            Err(DatasetError::NotNumeric { line: 2, .. })
        ));
        assert_eq!(
            parse("a,b\n1,2\n", &["c"], None),
            Err(DatasetError::UnknownColumn("c".into()))
        );
        assert_eq!(
            parse("a,a\n1,2\n", &[], None),
            Err(DatasetError::BadHeader("a".into()))
        );
        assert_eq!(parse("a\n1\n", &["a"], None), Err(DatasetError::NoFeatures));
        assert!(matches!(
            parse("a,y\n1,maybe\n", &[], Some("y")),
            Err(DatasetError::BadLabel { line: 2, .. })
        ));
    }
}
