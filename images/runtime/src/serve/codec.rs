//! The SageMaker payloads: request bodies (`text/csv`, `application/json`,
//! `application/jsonlines`) into rows, predictions into response bodies.
//! Pure functions over bytes, with no tensors and no I/O, so they are unit
//! tested and fuzzed on their own (images/runtime/fuzz).

use std::fmt::Write as _;

use serde_json::Value;

use super::predictions::{Input, Predictions, Shape};

/// A payload the model cannot use: answered with 400 and this message.
#[derive(Debug, Clone, PartialEq)]
pub struct BadInput(pub String);

impl BadInput {
    pub fn new(msg: impl Into<String>) -> Self {
        BadInput(msg.into())
    }
}

impl std::fmt::Display for BadInput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// What a model takes: rows of `n` numbers, or documents (text-classifier).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Expect {
    Features(usize),
    Text,
}

/// A body format of the SageMaker contract.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Csv,
    Json,
    JsonLines,
}

impl Format {
    /// The format of a `Content-Type` value (parameters such as `charset`
    /// ignored); `None` for one the server does not read.
    pub fn from_content_type(value: &str) -> Option<Format> {
        let essence = value.split(';').next().unwrap_or("").trim();
        match_mime(essence)
    }

    /// The first format of an `Accept` value the server can write
    /// (`*/*`, `text/*`, `application/*` allowed); JSON when it is empty.
    pub fn from_accept(value: &str) -> Option<Format> {
        if value.trim().is_empty() {
            return Some(Format::Json);
        }
        for part in value.split(',') {
            let essence = part.split(';').next().unwrap_or("").trim();
            if let Some(f) = match_mime(essence) {
                return Some(f);
            }
            match essence {
                "*/*" | "application/*" => return Some(Format::Json),
                "text/*" => return Some(Format::Csv),
                _ => {}
            }
        }
        None
    }

    /// The `Content-Type` of a response in this format.
    pub fn mime(self) -> &'static str {
        match self {
            Format::Csv => "text/csv",
            Format::Json => "application/json",
            Format::JsonLines => "application/jsonlines",
        }
    }
}

fn match_mime(essence: &str) -> Option<Format> {
    const CSV: &[&str] = &["text/csv", "text/plain"];
    const JSON: &[&str] = &["application/json"];
    const LINES: &[&str] = &[
        "application/jsonlines",
        "application/x-jsonlines",
        "application/jsonl",
        "application/x-ndjson",
    ];
    let is = |names: &[&str]| names.iter().any(|n| n.eq_ignore_ascii_case(essence));
    if is(CSV) {
        Some(Format::Csv)
    } else if is(JSON) {
        Some(Format::Json)
    } else if is(LINES) {
        Some(Format::JsonLines)
    } else {
        None
    }
}

/// Parses a request body of `format` into the rows (or documents) a model
/// expecting `expect` takes. Never panics; every refusal says what is wrong.
pub fn parse(format: Format, body: &[u8], expect: Expect) -> Result<Input, BadInput> {
    let input = match (format, expect) {
        (Format::Csv, Expect::Features(d)) => Input::Rows {
            values: parse_csv(body, d)?,
            features: d,
        },
        (Format::Csv, Expect::Text) => Input::Texts(parse_text_lines(body)?),
        (Format::Json, _) => {
            let v: Value = serde_json::from_slice(body)
                .map_err(|e| BadInput::new(format!("the body is not valid JSON: {e}")))?;
            let mut acc = Acc::new(expect);
            json_body(&v, &mut acc)?;
            acc.finish()
        }
        (Format::JsonLines, _) => {
            let mut acc = Acc::new(expect);
            for (i, line) in body.split(|&b| b == b'\n').enumerate() {
                if line.trim_ascii().is_empty() {
                    continue;
                }
                let v: Value = serde_json::from_slice(line)
                    .map_err(|e| BadInput::new(format!("line {}: not valid JSON: {e}", i + 1)))?;
                acc.row(&v)
                    .map_err(|e| BadInput::new(format!("line {}: {}", i + 1, e.0)))?;
            }
            acc.finish()
        }
    };
    if input.rows() == 0 {
        return Err(BadInput::new("the request holds no rows"));
    }
    Ok(input)
}

/// Numbers of a CSV body, `d` per line, blank lines skipped.
pub fn parse_csv(body: &[u8], d: usize) -> Result<Vec<f32>, BadInput> {
    let mut values = Vec::with_capacity(d.max(1) * (1 + body.len() / (4 * d.max(1))));
    for (i, line) in body.split(|&b| b == b'\n').enumerate() {
        let line = line.trim_ascii();
        if line.is_empty() {
            continue;
        }
        let start = values.len();
        for (j, field) in line.split(|&b| b == b',').enumerate() {
            if j >= d {
                let count = line.split(|&b| b == b',').count();
                return Err(BadInput::new(format!(
                    "line {}: {count} values, the model takes {d} features",
                    i + 1
                )));
            }
            values
                .push(number(field.trim_ascii()).map_err(|e| {
                    BadInput::new(format!("line {}, column {}: {e}", i + 1, j + 1))
                })?);
        }
        let got = values.len() - start;
        if got != d {
            return Err(BadInput::new(format!(
                "line {}: {got} values, the model takes {d} features",
                i + 1
            )));
        }
    }
    Ok(values)
}

/// One finite number.
fn number(field: &[u8]) -> Result<f32, String> {
    let text = std::str::from_utf8(field).map_err(|_| "not UTF-8 text".to_string())?;
    let text = text.strip_prefix('"').unwrap_or(text);
    let text = text.strip_suffix('"').unwrap_or(text);
    match text.parse::<f32>() {
        Ok(v) if v.is_finite() => Ok(v),
        Ok(_) => Err(format!("{text:?} is not a finite number")),
        Err(_) => Err(format!("{:?} is not a number", truncate(text))),
    }
}

fn truncate(text: &str) -> &str {
    match text.char_indices().nth(40) {
        Some((i, _)) => &text[..i],
        None => text,
    }
}

/// Documents of a text body: one per non-blank line; a line in double
/// quotes is one CSV field (`""` is a quote).
pub fn parse_text_lines(body: &[u8]) -> Result<Vec<String>, BadInput> {
    let text = std::str::from_utf8(body).map_err(|e| {
        BadInput::new(format!(
            "the body is not UTF-8 text (byte {})",
            e.valid_up_to()
        ))
    })?;
    Ok(text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(
            |l| match l.strip_prefix('"').and_then(|l| l.strip_suffix('"')) {
                Some(inner) => inner.replace("\"\"", "\""),
                None => l.to_string(),
            },
        )
        .collect())
}

/// Rows collected from JSON values.
struct Acc {
    expect: Expect,
    values: Vec<f32>,
    texts: Vec<String>,
}

impl Acc {
    fn new(expect: Expect) -> Self {
        Acc {
            expect,
            values: Vec::new(),
            texts: Vec::new(),
        }
    }

    fn finish(self) -> Input {
        match self.expect {
            Expect::Features(d) => Input::Rows {
                values: self.values,
                features: d,
            },
            Expect::Text => Input::Texts(self.texts),
        }
    }

    /// One row: `[numbers]`, `{"features": [numbers]}` (SageMaker's dense
    /// JSON), `{"data": {"features": {"values": [...]}}}`; for text, a
    /// string or `{"text": string}` (also `source`).
    fn row(&mut self, v: &Value) -> Result<(), BadInput> {
        match self.expect {
            Expect::Features(d) => {
                let arr = features_of(v).ok_or_else(|| {
                    BadInput::new(
                        "a row must be an array of numbers or an object with \"features\"",
                    )
                })?;
                if arr.len() != d {
                    return Err(BadInput::new(format!(
                        "a row has {} values, the model takes {d} features",
                        arr.len()
                    )));
                }
                for x in arr {
                    self.values.push(json_number(x)?);
                }
            }
            Expect::Text => {
                let text = match v {
                    Value::String(s) => Some(s),
                    Value::Object(m) => match m.get("text").or_else(|| m.get("source")) {
                        Some(Value::String(s)) => Some(s),
                        _ => None,
                    },
                    _ => None,
                };
                let text = text.ok_or_else(|| {
                    BadInput::new("a document must be a string or an object with \"text\"")
                })?;
                self.texts.push(text.clone());
            }
        }
        Ok(())
    }
}

fn features_of(v: &Value) -> Option<&Vec<Value>> {
    match v {
        Value::Array(a) => Some(a),
        Value::Object(m) => match m.get("features") {
            Some(Value::Array(a)) => Some(a),
            _ => match m.get("data").and_then(|d| d.get("features")) {
                Some(Value::Object(f)) => match f.get("values") {
                    Some(Value::Array(a)) => Some(a),
                    _ => None,
                },
                _ => None,
            },
        },
        _ => None,
    }
}

fn json_number(v: &Value) -> Result<f32, BadInput> {
    match v.as_f64() {
        Some(x) if (x as f32).is_finite() => Ok(x as f32),
        _ => Err(BadInput::new(format!(
            "{} is not a finite number",
            truncate(&v.to_string())
        ))),
    }
}

/// A whole JSON body: `{"instances": [row, ...]}`, `{"inputs": [...]}`,
/// a list of rows, one row (`[numbers]`, `{"features": [...]}`, a string).
fn json_body(v: &Value, acc: &mut Acc) -> Result<(), BadInput> {
    let rows = match v {
        Value::Object(m) => m.get("instances").or_else(|| m.get("inputs")),
        _ => None,
    };
    let indexed = |i: usize, e: BadInput| BadInput::new(format!("instance {}: {}", i + 1, e.0));
    match (rows, v) {
        (Some(Value::Array(rows)), _) => {
            for (i, r) in rows.iter().enumerate() {
                acc.row(r).map_err(|e| indexed(i, e))?;
            }
            Ok(())
        }
        (Some(_), _) => Err(BadInput::new("\"instances\" must be an array")),
        (None, Value::Array(rows))
            if rows
                .first()
                .is_some_and(|r| r.is_array() || r.is_object() || r.is_string()) =>
        {
            for (i, r) in rows.iter().enumerate() {
                acc.row(r).map_err(|e| indexed(i, e))?;
            }
            Ok(())
        }
        (None, _) => acc.row(v),
    }
}

/// Writes predictions in `format`: one CSV line, one JSON-lines object, or
/// one entry of `predictions` (`projections` for PCA) per row.
pub fn write(format: Format, p: &Predictions) -> Vec<u8> {
    let mut out = String::with_capacity(32 + p.rows * (16 + 12 * p.width));
    match format {
        Format::Csv => {
            for r in 0..p.rows {
                let mut first = true;
                let mut sep = |out: &mut String| {
                    if !std::mem::take(&mut first) {
                        out.push(',');
                    }
                };
                if p.shape.has_label() {
                    sep(&mut out);
                    let _ = write!(out, "{}", p.labels[r]);
                }
                for x in p.row(r) {
                    sep(&mut out);
                    push_f32(&mut out, *x);
                }
                out.push('\n');
            }
        }
        Format::Json => {
            out.push_str(if p.shape == Shape::Projection {
                "{\"projections\":["
            } else {
                "{\"predictions\":["
            });
            for r in 0..p.rows {
                if r > 0 {
                    out.push(',');
                }
                json_row(&mut out, p, r);
            }
            out.push_str("]}");
        }
        Format::JsonLines => {
            for r in 0..p.rows {
                json_row(&mut out, p, r);
                out.push('\n');
            }
        }
    }
    out.into_bytes()
}

fn json_row(out: &mut String, p: &Predictions, r: usize) {
    let values = p.row(r);
    let list = |out: &mut String| {
        out.push('[');
        for (i, x) in values.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            push_f32(out, *x);
        }
        out.push(']');
    };
    match p.shape {
        Shape::Regressor => {
            out.push_str("{\"score\":");
            push_f32(out, values[0]);
        }
        Shape::Binary => {
            out.push_str("{\"score\":");
            push_f32(out, values[0]);
            let _ = write!(out, ",\"predicted_label\":{}", p.labels[r]);
        }
        Shape::Multiclass => {
            out.push_str("{\"score\":");
            list(out);
            let _ = write!(out, ",\"predicted_label\":{}", p.labels[r]);
        }
        Shape::Label => {
            let _ = write!(out, "{{\"predicted_label\":{}", p.labels[r]);
        }
        Shape::Clustering => {
            let _ = write!(
                out,
                "{{\"closest_cluster\":{},\"distance_to_cluster\":",
                p.labels[r]
            );
            push_f32(out, values[0]);
        }
        Shape::Projection => {
            out.push_str("{\"projection\":");
            list(out);
        }
    }
    out.push('}');
}

/// A float as JSON and CSV write it: the shortest text that reads back the
/// same; `null` for the non-finite values JSON has no word for.
pub fn push_f32(out: &mut String, x: f32) {
    if x.is_finite() {
        let _ = write!(out, "{x}");
    } else {
        out.push_str("null");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rows(input: Input) -> (Vec<f32>, usize) {
        match input {
            Input::Rows { values, features } => (values, features),
            Input::Texts(_) => panic!("texts"),
        }
    }

    #[test]
    fn content_types_and_accept() {
        assert_eq!(
            Format::from_content_type("text/csv; charset=utf-8"),
            Some(Format::Csv)
        );
        assert_eq!(
            Format::from_content_type("Application/JSON"),
            Some(Format::Json)
        );
        assert_eq!(
            Format::from_content_type("application/jsonlines"),
            Some(Format::JsonLines)
        );
        assert_eq!(Format::from_content_type("image/png"), None);
        assert_eq!(Format::from_accept(""), Some(Format::Json));
        assert_eq!(Format::from_accept("*/*"), Some(Format::Json));
        assert_eq!(
            Format::from_accept("image/png, text/csv;q=0.5"),
            Some(Format::Csv)
        );
        assert_eq!(Format::from_accept("image/png"), None);
    }

    #[test]
    fn csv_rows_and_refusals() {
        let (v, d) =
            rows(parse(Format::Csv, b"1,2,3\r\n\n 4, 5 ,6e0\n", Expect::Features(3)).unwrap());
        assert_eq!((v, d), (vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0], 3));
        let e = parse(Format::Csv, b"1,2,3\n1,2\n", Expect::Features(3)).unwrap_err();
        assert_eq!(e.0, "line 2: 2 values, the model takes 3 features");
        let e = parse(Format::Csv, b"1,2,3,4\n", Expect::Features(3)).unwrap_err();
        assert_eq!(e.0, "line 1: 4 values, the model takes 3 features");
        let e = parse(Format::Csv, b"1,x,3\n", Expect::Features(3)).unwrap_err();
        assert_eq!(e.0, "line 1, column 2: \"x\" is not a number");
        let e = parse(Format::Csv, b"1,nan,3\n", Expect::Features(3)).unwrap_err();
        assert!(e.0.contains("not a finite number"), "{e}");
        let e = parse(Format::Csv, b"\n\n", Expect::Features(3)).unwrap_err();
        assert_eq!(e.0, "the request holds no rows");
        let e = parse(Format::Csv, b"1,\xff,3", Expect::Features(3)).unwrap_err();
        assert!(e.0.contains("UTF-8"), "{e}");
    }

    #[test]
    fn json_shapes() {
        for body in [
            &br#"{"instances":[{"features":[1,2]},{"features":[3,4]}]}"#[..],
            br#"{"instances":[[1,2],[3,4]]}"#,
            br#"[[1,2],[3,4]]"#,
            br#"{"instances":[{"data":{"features":{"values":[1,2]}}},[3,4]]}"#,
        ] {
            let (v, _) = rows(parse(Format::Json, body, Expect::Features(2)).unwrap());
            assert_eq!(v, [1.0, 2.0, 3.0, 4.0], "{}", String::from_utf8_lossy(body));
        }
        let (v, _) =
            rows(parse(Format::Json, br#"{"features":[1,2]}"#, Expect::Features(2)).unwrap());
        assert_eq!(v, [1.0, 2.0]);
        let (v, _) = rows(parse(Format::Json, br#"[1,2]"#, Expect::Features(2)).unwrap());
        assert_eq!(v, [1.0, 2.0]);
        let e = parse(
            Format::Json,
            br#"{"instances":[[1,2],[3]]}"#,
            Expect::Features(2),
        )
        .unwrap_err();
        assert_eq!(
            e.0,
            "instance 2: a row has 1 values, the model takes 2 features"
        );
        let e = parse(
            Format::Json,
            br#"{"instances":[[1,"a"]]}"#,
            Expect::Features(2),
        )
        .unwrap_err();
        assert!(e.0.contains("not a finite number"), "{e}");
        let e = parse(
            Format::Json,
            br#"{"instances":[[1,1e39]]}"#,
            Expect::Features(2),
        )
        .unwrap_err();
        assert!(e.0.contains("not a finite number"), "{e}");
        assert!(parse(Format::Json, b"{", Expect::Features(2)).is_err());
        assert!(parse(Format::Json, br#"{"instances":[]}"#, Expect::Features(2)).is_err());
        assert!(parse(Format::Json, br#"{"instances":3}"#, Expect::Features(2)).is_err());
    }

    #[test]
    fn json_lines_and_text() {
        let (v, _) = rows(
            parse(
                Format::JsonLines,
                b"{\"features\":[1,2]}\n\n[3,4]\n",
                Expect::Features(2),
            )
            .unwrap(),
        );
        assert_eq!(v, [1.0, 2.0, 3.0, 4.0]);
        let e = parse(Format::JsonLines, b"[1,2]\n[3\n", Expect::Features(2)).unwrap_err();
        assert!(e.0.starts_with("line 2: not valid JSON"), "{e}");
        let t = parse(
            Format::Json,
            br#"{"instances":["a b",{"text":"c"}]}"#,
            Expect::Text,
        )
        .unwrap();
        assert_eq!(t, Input::Texts(vec!["a b".into(), "c".into()]));
        let t = parse(
            Format::Csv,
            b"hello world\n\"say \"\"hi\"\"\"\n",
            Expect::Text,
        )
        .unwrap();
        assert_eq!(
            t,
            Input::Texts(vec!["hello world".into(), "say \"hi\"".into()])
        );
        assert!(parse(Format::Json, br#"{"instances":[3]}"#, Expect::Text).is_err());
    }

    #[test]
    fn writes_every_shape() {
        let p = Predictions {
            shape: Shape::Multiclass,
            rows: 2,
            width: 2,
            labels: vec![1, 0],
            values: vec![0.25, 0.75, 0.5, 0.5],
        };
        assert_eq!(
            String::from_utf8(write(Format::Json, &p)).unwrap(),
            r#"{"predictions":[{"score":[0.25,0.75],"predicted_label":1},{"score":[0.5,0.5],"predicted_label":0}]}"#
        );
        assert_eq!(
            String::from_utf8(write(Format::Csv, &p)).unwrap(),
            "1,0.25,0.75\n0,0.5,0.5\n"
        );
        let p = Predictions {
            shape: Shape::Clustering,
            rows: 1,
            width: 1,
            labels: vec![2],
            values: vec![1.5],
        };
        assert_eq!(
            String::from_utf8(write(Format::JsonLines, &p)).unwrap(),
            "{\"closest_cluster\":2,\"distance_to_cluster\":1.5}\n"
        );
        let p = Predictions {
            shape: Shape::Projection,
            rows: 1,
            width: 2,
            labels: vec![],
            values: vec![1.0, f32::NAN],
        };
        assert_eq!(
            String::from_utf8(write(Format::Json, &p)).unwrap(),
            r#"{"projections":[{"projection":[1,null]}]}"#
        );
    }
}
