//! The query path's readers of index records (core::index_record): one call per chunk of
//! records read from the index turns them into the text values of a query's columns. IMAGE
//! level: instance records (`InstanceColumns`); STUDY level: study records (`StudyColumns`).

use std::borrow::Cow;
use std::collections::HashSet;

use dicomvault_core::index_record::{self, Picked, Value};

use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyList, PyString, PyTuple};

use crate::gil;

/// Where one column's value comes from, tried in this order: the series' and study's value
/// (`upper`), the instance's `attrs` entry, the record's top-level field.
struct Column {
    upper: bool,
    attr: Option<usize>,
    field: Option<usize>,
    /// An integer field is written as decimal text (InstanceNumber); otherwise the record is
    /// handed back to Python.
    number: bool,
}

/// The columns of one IMAGE-level query (index/query.py builds them once per query).
#[pyclass(frozen, module = "dicomvault._native")]
pub struct InstanceColumns {
    /// Top-level fields read: study_uid and series_uid first (they name the upper values).
    fields: Vec<String>,
    keywords: Vec<String>,
    columns: Vec<Column>,
}

fn slot(names: &mut Vec<String>, name: String) -> usize {
    names.iter().position(|n| *n == name).unwrap_or_else(|| {
        names.push(name);
        names.len() - 1
    })
}

/// The records of a chunk (bytes, or None where the record is gone), held while their picks
/// borrow them.
fn record_bytes<'py>(raws: &Bound<'py, PyList>) -> PyResult<Vec<Option<Bound<'py, PyBytes>>>> {
    raws.iter().map(|r| if r.is_none() { Ok(None) } else { Ok(Some(r.cast_into::<PyBytes>()?)) }).collect()
}

/// `index_record::pick` of every record (None where there is none), without the GIL for a
/// chunk large enough to be worth it.
fn pick_all<'a>(
    py: Python<'_>,
    items: &'a [Option<Bound<'_, PyBytes>>],
    fields: &[String],
    keywords: &[String],
) -> Vec<Option<Option<Picked<'a>>>> {
    let slices: Vec<Option<&'a [u8]>> = items.iter().map(|b| b.as_ref().map(|b| b.as_bytes())).collect();
    let total: usize = slices.iter().flatten().map(|s| s.len()).sum();
    let fields: Vec<&str> = fields.iter().map(String::as_str).collect();
    let keywords: Vec<&str> = keywords.iter().map(String::as_str).collect();
    gil::bytes_work(py, total, || {
        slices.iter().map(|s| s.map(|raw| index_record::pick(raw, &fields, &keywords))).collect()
    })
}

/// One record's study and series UIDs as the Python path keys them ("" if absent); None if
/// either is of another kind (the Python path handles that record).
fn uids<'a>(p: &Picked<'a>) -> Option<(&'a str, &'a str)> {
    Some((text(p.fields[0])?, text(p.fields[1])?))
}

/// A text field as Python's `str(f.get(name, ""))` reads it ("" if absent); None for any other
/// kind (str(None) is "None", and so on: the Python path says what it says).
fn text(v: Value<'_>) -> Option<&str> {
    match v {
        Value::Str(s) => Some(s),
        Value::Absent => Some(""),
        _ => None,
    }
}

/// One column's value of a readable record.
enum Cell<'a> {
    Text(&'a str),
    Number(i64),
}

impl InstanceColumns {
    /// Column `c` of a readable record, or None to hand the record to Python.
    fn value<'a>(&self, c: &Column, p: &Picked<'a>) -> Option<Cell<'a>> {
        if let Some(j) = c.attr {
            match p.attrs[j] {
                Value::Absent => {}
                Value::Str(s) => return Some(Cell::Text(s)),
                Value::Nil => return Some(Cell::Text("")),
                _ => return None,
            }
        }
        match c.field.map(|i| p.fields[i]) {
            None | Some(Value::Absent | Value::Nil) => Some(Cell::Text("")),
            Some(Value::Str(s)) => Some(Cell::Text(s)),
            Some(Value::Int(n)) if c.number => Some(Cell::Number(n)),
            Some(_) => None,
        }
    }
}

#[pymethods]
impl InstanceColumns {
    /// `columns`: (field, attrs keyword, upper, number) per column, see `Column`.
    #[new]
    fn new(columns: Vec<(Option<String>, Option<String>, bool, bool)>) -> Self {
        let mut fields = vec!["study_uid".to_owned(), "series_uid".to_owned()];
        let mut keywords = Vec::new();
        let columns = columns
            .into_iter()
            .map(|(field, attr, upper, number)| Column {
                upper,
                attr: attr.map(|a| slot(&mut keywords, a)),
                field: field.map(|f| slot(&mut fields, f)),
                number,
            })
            .collect();
        InstanceColumns { fields, keywords, columns }
    }

    /// One entry per item of `raws` (an instance record's bytes, or None): None for None, False
    /// for a record to read in Python (see core::index_record), else the column texts. Upper
    /// values come from `uppers`, (study UID, series UID) -> one str (or None: not an upper
    /// attribute, use the instance's) per column; `fill(pairs)` is called first with the pairs
    /// of this chunk that `uppers` lacks and must add them.
    fn rows<'py>(
        &self,
        py: Python<'py>,
        raws: &Bound<'py, PyList>,
        uppers: &Bound<'py, PyDict>,
        fill: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyList>> {
        let items = record_bytes(raws)?;
        let picked = pick_all(py, &items, &self.fields, &self.keywords);

        let mut seen: HashSet<(&str, &str)> = HashSet::new();
        let mut missing: Vec<Bound<'py, PyTuple>> = Vec::new();
        for p in picked.iter().flatten().flatten() {
            if let Some(pair) = uids(p) {
                if seen.insert(pair) {
                    let key = PyTuple::new(py, [pair.0, pair.1])?;
                    if !uppers.contains(&key)? {
                        missing.push(key);
                    }
                }
            }
        }
        if !missing.is_empty() {
            fill.call1((PyList::new(py, missing)?,))?;
        }

        let hand_back = pyo3::types::PyBool::new(py, false).to_owned().into_any();
        let mut rows = Rows {
            columns: self,
            uppers,
            pair: None,
            upper: Vec::new(),
            texts: vec![None; self.columns.len()],
        };
        let mut out = Vec::with_capacity(picked.len());
        for p in &picked {
            out.push(match p {
                None => py.None().into_bound(py),
                Some(None) => hand_back.clone(),
                Some(Some(p)) => rows.row(py, p)?.unwrap_or_else(|| hand_back.clone()),
            });
        }
        PyList::new(py, out)
    }
}

/// Builds the rows of one chunk. Records of a chunk mostly share their series and many of their
/// texts (UIDs of the study and series, SOP class, transfer syntax): the upper values are looked
/// up again only when the series changes, and a text equal to the previous record's is the same
/// Python str, not a new one.
struct Rows<'a, 'py> {
    columns: &'a InstanceColumns,
    uppers: &'a Bound<'py, PyDict>,
    pair: Option<(&'a str, &'a str)>,
    /// The series' upper values (None objects where the instance's own apply).
    upper: Vec<Bound<'py, PyAny>>,
    /// Per column the previous record's text and its str.
    texts: Vec<Option<(&'a str, Bound<'py, PyString>)>>,
}

impl<'a, 'py> Rows<'a, 'py> {
    /// The column texts of one readable record, None to hand it back.
    fn row(&mut self, py: Python<'py>, p: &Picked<'a>) -> PyResult<Option<Bound<'py, PyAny>>> {
        let Some(pair) = uids(p) else { return Ok(None) };
        if self.pair != Some(pair) {
            let Some(upper) = self.uppers.get_item(PyTuple::new(py, [pair.0, pair.1])?)? else {
                return Ok(None);
            };
            let upper = upper.cast_into::<PyList>()?;
            if upper.len() != self.columns.columns.len() {
                return Err(pyo3::exceptions::PyValueError::new_err(format!(
                    "{} upper values for {} columns",
                    upper.len(),
                    self.columns.columns.len()
                )));
            }
            self.upper = upper.iter().collect();
            self.pair = Some(pair);
        }
        let mut row = Vec::with_capacity(self.columns.columns.len());
        for (i, c) in self.columns.columns.iter().enumerate() {
            if c.upper && !self.upper[i].is_none() {
                row.push(self.upper[i].clone());
                continue;
            }
            match self.columns.value(c, p) {
                Some(Cell::Text(s)) => match &self.texts[i] {
                    Some((last, obj)) if *last == s => row.push(obj.clone().into_any()),
                    _ => {
                        let obj = PyString::new(py, s);
                        row.push(obj.clone().into_any());
                        self.texts[i] = Some((s, obj));
                    }
                },
                Some(Cell::Number(n)) => row.push(PyString::new(py, &n.to_string()).into_any()),
                None => return Ok(None),
            }
        }
        Ok(Some(PyList::new(py, row)?.into_any()))
    }
}

/// Where one STUDY-level column's value comes from (index/query.py `study_view`).
enum StudyColumn {
    /// A text field of the record (StudyInstanceUID, PatientID): "" if absent or nil.
    Text(usize),
    /// An integer field written as decimal text ("0" if absent): the study's counts.
    Count(usize),
    /// The sorted keys with a count above zero of a map field, joined by `\\`
    /// (ModalitiesInStudy, SOPClassesInStudy): "" if absent.
    Keys(usize),
    /// An `attrs` entry: "" if absent or nil.
    Attr(usize),
}

/// The columns of one STUDY-level query (index/query.py builds them once per query).
#[pyclass(frozen, module = "dicomvault._native")]
pub struct StudyColumns {
    fields: Vec<String>,
    keywords: Vec<String>,
    columns: Vec<StudyColumn>,
}

impl StudyColumns {
    /// Column `c` of a readable record, or None to hand the record to Python.
    fn value<'a>(c: &StudyColumn, p: &Picked<'a>) -> Option<StudyCell<'a>> {
        match *c {
            StudyColumn::Text(i) | StudyColumn::Attr(i) => {
                let v = if matches!(c, StudyColumn::Text(_)) { p.fields[i] } else { p.attrs[i] };
                match v {
                    Value::Str(s) => Some(StudyCell::Text(s)),
                    Value::Absent | Value::Nil => Some(StudyCell::Text("")),
                    _ => None,
                }
            }
            StudyColumn::Count(i) => match p.fields[i] {
                Value::Int(n) => Some(StudyCell::Number(n)),
                Value::Absent => Some(StudyCell::Number(0)),
                _ => None, // str(None) is "None": Python writes it
            },
            StudyColumn::Keys(i) => match p.fields[i] {
                Value::Map(m) => index_record::counted_keys(m).map(StudyCell::Keys),
                Value::Absent => Some(StudyCell::Text("")),
                _ => None,
            },
        }
    }
}

enum StudyCell<'a> {
    Text(&'a str),
    Number(i64),
    Keys(Vec<&'a str>),
}

#[pymethods]
impl StudyColumns {
    /// `columns`: (source, name) per column; source is "text" or "count" (a record field),
    /// "keys" (a map field of counts) or "attr" (an `attrs` keyword), see `StudyColumn`.
    #[new]
    fn new(columns: Vec<(String, String)>) -> PyResult<Self> {
        let mut fields = Vec::new();
        let mut keywords = Vec::new();
        let columns = columns
            .into_iter()
            .map(|(source, name)| match source.as_str() {
                "text" => Ok(StudyColumn::Text(slot(&mut fields, name))),
                "count" => Ok(StudyColumn::Count(slot(&mut fields, name))),
                "keys" => Ok(StudyColumn::Keys(slot(&mut fields, name))),
                "attr" => Ok(StudyColumn::Attr(slot(&mut keywords, name))),
                _ => {
                    Err(pyo3::exceptions::PyValueError::new_err(format!("unknown column source {source:?}")))
                }
            })
            .collect::<PyResult<_>>()?;
        Ok(StudyColumns { fields, keywords, columns })
    }

    /// One entry per item of `raws` (a study record's bytes, or None): None for None, False for
    /// a record to read in Python (see core::index_record), else the column texts.
    fn rows<'py>(&self, py: Python<'py>, raws: &Bound<'py, PyList>) -> PyResult<Bound<'py, PyList>> {
        let items = record_bytes(raws)?;
        let picked = pick_all(py, &items, &self.fields, &self.keywords);

        let hand_back = pyo3::types::PyBool::new(py, false).to_owned().into_any();
        // Per column the previous record's text and its str: studies of one query share many
        // texts (a date, a description), each then one Python str. Borrowed from the records
        // where the text is theirs: a new text costs no copy.
        let mut texts: Vec<Option<(Cow<'_, str>, Bound<'py, PyString>)>> = vec![None; self.columns.len()];
        let mut out = Vec::with_capacity(picked.len());
        let mut row: Vec<Bound<'py, PyAny>> = Vec::with_capacity(self.columns.len());
        'records: for p in &picked {
            let p = match p {
                None => {
                    out.push(py.None().into_bound(py));
                    continue;
                }
                Some(Some(p)) if !p.attrs_nil => p,
                Some(_) => {
                    out.push(hand_back.clone());
                    continue;
                }
            };
            row.clear();
            for (i, c) in self.columns.iter().enumerate() {
                let text: Cow<'_, str> = match Self::value(c, p) {
                    Some(StudyCell::Text(s)) => s.into(),
                    Some(StudyCell::Number(n)) => n.to_string().into(),
                    Some(StudyCell::Keys(k)) => k.join("\\").into(),
                    None => {
                        out.push(hand_back.clone());
                        continue 'records;
                    }
                };
                match &texts[i] {
                    Some((last, obj)) if *last == *text => row.push(obj.clone().into_any()),
                    _ => {
                        let obj = PyString::new(py, &text);
                        row.push(obj.clone().into_any());
                        texts[i] = Some((text, obj));
                    }
                }
            }
            out.push(PyList::new(py, row.drain(..))?.into_any());
        }
        PyList::new(py, out)
    }
}

/// The fields of an instance record a retrieve's native batch needs (`Index.sending_fields`).
const SENDING_FIELDS: [&str; 4] = ["hash", "transfer_syntax", "sop_class_uid", "study_uid"];

/// Per instance record of `raws` (its bytes, or None): None for None, False for a record to read
/// in Python, else (blob hash, transfer syntax, SOP Class UID, Study Instance UID), an absent
/// field read as empty. Why: a retrieve plans a hundred objects at a time, and msgpack-decoding
/// each whole record (its ~25 attributes) in Python took ~9 µs of the ~10 µs per object.
#[pyfunction]
pub fn sending_fields<'py>(py: Python<'py>, raws: &Bound<'py, PyList>) -> PyResult<Bound<'py, PyList>> {
    let items = record_bytes(raws)?;
    let picked = pick_all(py, &items, &SENDING_FIELDS.map(String::from), &[]);
    let hand_back = pyo3::types::PyBool::new(py, false).to_owned().into_any();
    let mut out = Vec::with_capacity(picked.len());
    for p in &picked {
        let Some(picked) = p else {
            out.push(py.None().into_bound(py));
            continue;
        };
        let hash = match picked.as_ref().map(|p| p.fields[0]) {
            Some(Value::Bin(b)) => Some(b),
            Some(Value::Absent) => Some(&b""[..]),
            _ => None,
        };
        let row = picked
            .as_ref()
            .zip(hash)
            .and_then(|(p, h)| Some((h, text(p.fields[1])?, text(p.fields[2])?, text(p.fields[3])?)));
        out.push(match row {
            Some((h, ts, class, study)) => {
                (PyBytes::new(py, h), ts, class, study).into_pyobject(py)?.into_any()
            }
            None => hand_back.clone(),
        });
    }
    PyList::new(py, out)
}
