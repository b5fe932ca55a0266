//! The Open Inference Protocol (KServe v2) payloads: an inference request
//! with typed tensors (JSON data, or the binary tensor extension that
//! Triton's clients send) into rows, predictions into output tensors. Pure
//! functions, unit tested and fuzzed like [`super::codec`].

use serde_json::{Map, Value, json};

use super::codec::{BadInput, Expect, push_f32};
use super::predictions::{Input, Predictions, Shape};

/// The version every model is served under.
pub const MODEL_VERSION: &str = "1";

/// An output the client asked for.
#[derive(Debug, Clone, PartialEq)]
pub struct RequestedOutput {
    pub name: String,
    pub binary: bool,
}

/// A parsed inference request.
#[derive(Debug, Clone, PartialEq)]
pub struct InferRequest {
    pub id: Option<String>,
    pub input: Input,
    /// Empty: every output.
    pub outputs: Vec<RequestedOutput>,
    /// `parameters.binary_data_output` of the request.
    pub binary_default: bool,
}

/// Parses an inference request; `json_len` is the
/// `Inference-Header-Content-Length` header (binary tensor data follows
/// the JSON).
pub fn parse_infer(
    body: &[u8],
    json_len: Option<usize>,
    expect: Expect,
) -> Result<InferRequest, BadInput> {
    let (head, mut binary) = match json_len {
        Some(n) if n <= body.len() => body.split_at(n),
        Some(n) => {
            return Err(BadInput::new(format!(
                "Inference-Header-Content-Length {n} is beyond the body's {} bytes",
                body.len()
            )));
        }
        None => (body, &[][..]),
    };
    let v: Value = serde_json::from_slice(head)
        .map_err(|e| BadInput::new(format!("the request is not valid JSON: {e}")))?;
    let obj = v
        .as_object()
        .ok_or_else(|| BadInput::new("the request must be a JSON object"))?;
    let id = match obj.get("id") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(_) => return Err(BadInput::new("\"id\" must be a string")),
    };
    let inputs = match obj.get("inputs") {
        Some(Value::Array(a)) => a,
        _ => return Err(BadInput::new("\"inputs\" must be an array of tensors")),
    };
    let [tensor] = &inputs[..] else {
        return Err(BadInput::new(format!(
            "the model takes one input tensor, the request has {}",
            inputs.len()
        )));
    };
    let input = parse_tensor(tensor, &mut binary, expect)?;
    if input.rows() == 0 {
        return Err(BadInput::new("the request holds no rows"));
    }
    if !binary.is_empty() {
        return Err(BadInput::new(format!(
            "{} bytes of binary data are not claimed by any input",
            binary.len()
        )));
    }
    let binary_default = flag(obj.get("parameters"), "binary_data_output")?;
    let mut outputs = Vec::new();
    match obj.get("outputs") {
        None | Some(Value::Null) => {}
        Some(Value::Array(list)) => {
            for o in list {
                let name = o
                    .get("name")
                    .and_then(Value::as_str)
                    .ok_or_else(|| BadInput::new("every requested output needs a \"name\""))?;
                let binary = match o.get("parameters").and_then(|p| p.get("binary_data")) {
                    None => binary_default,
                    Some(_) => flag(o.get("parameters"), "binary_data")?,
                };
                outputs.push(RequestedOutput {
                    name: name.to_string(),
                    binary,
                });
            }
        }
        Some(_) => return Err(BadInput::new("\"outputs\" must be an array")),
    }
    Ok(InferRequest {
        id,
        input,
        outputs,
        binary_default,
    })
}

fn flag(params: Option<&Value>, key: &str) -> Result<bool, BadInput> {
    match params.and_then(|p| p.get(key)) {
        None | Some(Value::Null) => Ok(false),
        Some(Value::Bool(b)) => Ok(*b),
        Some(_) => Err(BadInput::new(format!(
            "parameter {key:?} must be a boolean"
        ))),
    }
}

/// Bytes per element of a fixed-size datatype.
fn element_size(datatype: &str) -> Option<usize> {
    Some(match datatype {
        "BOOL" | "INT8" | "UINT8" => 1,
        "INT16" | "UINT16" | "FP16" => 2,
        "INT32" | "UINT32" | "FP32" => 4,
        "INT64" | "UINT64" | "FP64" => 8,
        _ => return None,
    })
}

pub(crate) fn parse_tensor(
    t: &Value,
    binary: &mut &[u8],
    expect: Expect,
) -> Result<Input, BadInput> {
    let name = t.get("name").and_then(Value::as_str).unwrap_or("?");
    let datatype = t
        .get("datatype")
        .and_then(Value::as_str)
        .ok_or_else(|| BadInput::new(format!("input {name:?} has no \"datatype\"")))?;
    let shape: Vec<usize> = match t.get("shape") {
        Some(Value::Array(dims)) => dims
            .iter()
            .map(|d| d.as_u64().and_then(|d| usize::try_from(d).ok()))
            .collect::<Option<_>>()
            .ok_or_else(|| BadInput::new(format!("input {name:?}: shape must be sizes")))?,
        _ => return Err(BadInput::new(format!("input {name:?} has no \"shape\""))),
    };
    let count = shape
        .iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d))
        .filter(|&c| c <= 1 << 28)
        .ok_or_else(|| BadInput::new(format!("input {name:?}: shape {shape:?} is too large")))?;
    let size = match t.get("parameters").and_then(|p| p.get("binary_data_size")) {
        None | Some(Value::Null) => None,
        Some(v) => Some(
            v.as_u64()
                .and_then(|s| usize::try_from(s).ok())
                .filter(|&s| s <= binary.len())
                .ok_or_else(|| {
                    BadInput::new(format!(
                        "input {name:?}: binary_data_size is not a size within the body's binary data"
                    ))
                })?,
        ),
    };
    let ctx = |msg: String| BadInput::new(format!("input {name:?}: {msg}"));
    let input = match expect {
        Expect::Text => {
            if datatype != "BYTES" {
                return Err(ctx(format!(
                    "the model takes text: datatype BYTES, not {datatype}"
                )));
            }
            let texts = match size {
                Some(n) => {
                    let (mine, rest) = binary.split_at(n);
                    *binary = rest;
                    binary_strings(mine).map_err(ctx)?
                }
                None => {
                    let mut out = Vec::new();
                    flatten(data_of(t, name)?, &mut |v| match v {
                        Value::String(s) => {
                            out.push(s.clone());
                            Ok(())
                        }
                        _ => Err("BYTES data must be strings".to_string()),
                    })
                    .map_err(ctx)?;
                    out
                }
            };
            if texts.len() != count {
                return Err(ctx(format!(
                    "shape {shape:?} holds {count} elements, the data {}",
                    texts.len()
                )));
            }
            Input::Texts(texts)
        }
        Expect::Features(d) => {
            // Checked: with a zero first size, `count` is 0 however large
            // the trailing sizes are.
            let trailing = shape
                .get(1..)
                .filter(|r| !r.is_empty())
                .and_then(|r| r.iter().try_fold(1usize, |a, &b| a.checked_mul(b)));
            let rows = match shape[..] {
                [n] if n == d => 1,
                [n, ..] if trailing == Some(d) => n,
                _ => {
                    return Err(ctx(format!(
                        "shape {shape:?} is not [rows, {d}]: the model takes {d} features"
                    )));
                }
            };
            let elem = element_size(datatype)
                .ok_or_else(|| ctx(format!("datatype {datatype} is not a numeric tensor type")))?;
            let values = match size {
                Some(n) => {
                    let (mine, rest) = binary.split_at(n);
                    *binary = rest;
                    if n != count * elem {
                        return Err(ctx(format!(
                            "{n} bytes of binary data, shape {shape:?} of {datatype} needs {}",
                            count * elem
                        )));
                    }
                    decode_binary(datatype, mine).map_err(ctx)?
                }
                None => {
                    let mut out = Vec::with_capacity(count);
                    let is_bool = datatype == "BOOL";
                    flatten(data_of(t, name)?, &mut |v| {
                        let x = match v {
                            Value::Bool(b) if is_bool => f32::from(u8::from(*b)),
                            Value::Number(n) if !is_bool => n.as_f64().unwrap_or(f64::NAN) as f32,
                            _ => return Err(format!("{datatype} data holds {}", kind_of(v))),
                        };
                        if !x.is_finite() {
                            return Err(format!("{v} is not a finite 32-bit number"));
                        }
                        out.push(x);
                        Ok(())
                    })
                    .map_err(ctx)?;
                    out
                }
            };
            if values.len() != count {
                return Err(ctx(format!(
                    "shape {shape:?} holds {count} elements, the data {}",
                    values.len()
                )));
            }
            debug_assert_eq!(values.len(), rows * d);
            Input::Rows {
                values,
                features: d,
            }
        }
    };
    Ok(input)
}

fn data_of<'a>(t: &'a Value, name: &str) -> Result<&'a Value, BadInput> {
    t.get("data")
        .ok_or_else(|| BadInput::new(format!("input {name:?} has no \"data\"")))
}

fn kind_of(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Visits the elements of `data` in row-major order (flat or nested lists).
fn flatten(data: &Value, f: &mut impl FnMut(&Value) -> Result<(), String>) -> Result<(), String> {
    match data {
        Value::Array(items) => items.iter().try_for_each(|v| match v {
            Value::Array(_) => flatten(v, f),
            other => f(other),
        }),
        other => f(other),
    }
}

/// Little-endian elements of a numeric datatype as finite f32s.
fn decode_binary(datatype: &str, bytes: &[u8]) -> Result<Vec<f32>, String> {
    macro_rules! each {
        ($t:ty) => {
            bytes
                .chunks_exact(std::mem::size_of::<$t>())
                .map(|c| <$t>::from_le_bytes(c.try_into().expect("exact chunk")) as f32)
                .collect::<Vec<f32>>()
        };
    }
    let values = match datatype {
        "BOOL" => bytes.iter().map(|&b| f32::from(u8::from(b != 0))).collect(),
        "INT8" => each!(i8),
        "UINT8" => each!(u8),
        "INT16" => each!(i16),
        "UINT16" => each!(u16),
        "INT32" => each!(i32),
        "UINT32" => each!(u32),
        "INT64" => each!(i64),
        "UINT64" => each!(u64),
        "FP32" => each!(f32),
        "FP64" => each!(f64),
        "FP16" => bytes
            .chunks_exact(2)
            .map(|c| f16_to_f32(u16::from_le_bytes([c[0], c[1]])))
            .collect(),
        other => return Err(format!("datatype {other} is not numeric")),
    };
    if values.iter().any(|x: &f32| !x.is_finite()) {
        return Err("the data holds a value that is not a finite 32-bit number".into());
    }
    Ok(values)
}

/// IEEE half precision to single.
fn f16_to_f32(h: u16) -> f32 {
    let sign = if h & 0x8000 != 0 { -1.0 } else { 1.0 };
    let exp = i32::from((h >> 10) & 0x1f);
    let frac = f32::from(h & 0x3ff);
    sign * match exp {
        0 => frac * 2f32.powi(-24),
        31 if frac == 0.0 => f32::INFINITY,
        31 => f32::NAN,
        e => (1.0 + frac / 1024.0) * 2f32.powi(e - 15),
    }
}

/// BYTES elements of the binary extension: a 4-byte little-endian length,
/// then that many bytes, each.
fn binary_strings(mut bytes: &[u8]) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    while !bytes.is_empty() {
        let Some((len, rest)) = bytes.split_first_chunk::<4>() else {
            return Err("truncated BYTES element length".into());
        };
        let len = u32::from_le_bytes(*len) as usize;
        if len > rest.len() {
            return Err("a BYTES element runs past its data".into());
        }
        let (s, rest) = rest.split_at(len);
        out.push(
            String::from_utf8(s.to_vec())
                .map_err(|_| "a BYTES element is not UTF-8".to_string())?,
        );
        bytes = rest;
    }
    Ok(out)
}

/// A response: the JSON, then binary output data when any was asked for;
/// `json_len` is then the `Inference-Header-Content-Length`.
pub struct InferResponse {
    pub body: Vec<u8>,
    pub json_len: Option<usize>,
}

/// Writes the output tensors of `p`: the label (INT64, `[rows]`) and the
/// values (FP32, `[rows]` or `[rows, width]`), or those `outputs` names.
pub fn write_infer(
    model: &str,
    id: Option<&str>,
    p: &Predictions,
    outputs: &[RequestedOutput],
    binary_default: bool,
) -> Result<InferResponse, BadInput> {
    let (label_name, value_name) = p.shape.output_names();
    let known = [label_name, value_name];
    for o in outputs {
        if !known.contains(&Some(o.name.as_str())) {
            let names: Vec<&str> = known.iter().flatten().copied().collect();
            return Err(BadInput::new(format!(
                "unknown output {:?}: the model has {}",
                o.name,
                names.join(", ")
            )));
        }
    }
    let wanted = |name: &str| -> Option<bool> {
        if outputs.is_empty() {
            Some(binary_default)
        } else {
            outputs.iter().find(|o| o.name == name).map(|o| o.binary)
        }
    };
    let mut out = String::with_capacity(96 + p.rows * (12 + 12 * p.width));
    let mut bin: Vec<u8> = Vec::new();
    out.push_str("{\"model_name\":");
    out.push_str(&Value::String(model.to_string()).to_string());
    out.push_str(",\"model_version\":\"1\"");
    if let Some(id) = id {
        out.push_str(",\"id\":");
        out.push_str(&Value::String(id.to_string()).to_string());
    }
    out.push_str(",\"outputs\":[");
    let mut first = true;
    if let Some(name) = label_name
        && let Some(binary) = wanted(name)
    {
        first = false;
        out.push_str(&format!(
            "{{\"name\":\"{name}\",\"datatype\":\"INT64\",\"shape\":[{}]",
            p.rows
        ));
        if binary {
            let start = bin.len();
            for l in &p.labels {
                bin.extend_from_slice(&l.to_le_bytes());
            }
            out.push_str(&format!(
                ",\"parameters\":{{\"binary_data_size\":{}}}}}",
                bin.len() - start
            ));
        } else {
            out.push_str(",\"data\":[");
            for (i, l) in p.labels.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&l.to_string());
            }
            out.push_str("]}");
        }
    }
    if let Some(name) = value_name
        && let Some(binary) = wanted(name)
    {
        if !first {
            out.push(',');
        }
        let shape = if p.shape.flat_values(p.width) {
            format!("[{}]", p.rows)
        } else {
            format!("[{},{}]", p.rows, p.width)
        };
        out.push_str(&format!(
            "{{\"name\":\"{name}\",\"datatype\":\"FP32\",\"shape\":{shape}"
        ));
        if binary {
            let start = bin.len();
            for x in &p.values {
                bin.extend_from_slice(&x.to_le_bytes());
            }
            out.push_str(&format!(
                ",\"parameters\":{{\"binary_data_size\":{}}}}}",
                bin.len() - start
            ));
        } else {
            out.push_str(",\"data\":[");
            for (i, x) in p.values.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                push_f32(&mut out, *x);
            }
            out.push_str("]}");
        }
    }
    out.push_str("]}");
    let json_len = (!bin.is_empty()).then_some(out.len());
    let mut body = out.into_bytes();
    body.extend_from_slice(&bin);
    Ok(InferResponse { body, json_len })
}

/// What `/v2/models/{name}` says about a model.
pub fn model_metadata(
    name: &str,
    algorithm: &str,
    expect: Expect,
    shape: Shape,
    width: usize,
) -> Value {
    let input = match expect {
        Expect::Features(d) => json!({"name": "input-0", "datatype": "FP32", "shape": [-1, d]}),
        Expect::Text => json!({"name": "text", "datatype": "BYTES", "shape": [-1]}),
    };
    let (label, value) = shape.output_names();
    let mut outputs = Vec::new();
    if let Some(l) = label {
        outputs.push(json!({"name": l, "datatype": "INT64", "shape": [-1]}));
    }
    if let Some(v) = value {
        let dims = if shape.flat_values(width) {
            json!([-1])
        } else {
            json!([-1, width])
        };
        outputs.push(json!({"name": v, "datatype": "FP32", "shape": dims}));
    }
    let mut m = Map::new();
    m.insert("name".into(), name.into());
    m.insert("versions".into(), json!([MODEL_VERSION]));
    m.insert("platform".into(), format!("kiln-{algorithm}").into());
    m.insert("inputs".into(), json!([input]));
    m.insert("outputs".into(), outputs.into());
    Value::Object(m)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rows(r: &InferRequest) -> &[f32] {
        match &r.input {
            Input::Rows { values, .. } => values,
            Input::Texts(_) => panic!("texts"),
        }
    }

    #[test]
    fn json_tensors_flat_and_nested() {
        let body = br#"{"id":"a","inputs":[{"name":"x","shape":[2,2],"datatype":"FP64","data":[[1,2],[3,4]]}]}"#;
        let r = parse_infer(body, None, Expect::Features(2)).unwrap();
        assert_eq!(rows(&r), [1.0, 2.0, 3.0, 4.0]);
        assert_eq!(r.id.as_deref(), Some("a"));
        let body = br#"{"inputs":[{"name":"x","shape":[4],"datatype":"INT32","data":[1,2,3,4]}],"outputs":[{"name":"score"}]}"#;
        let r = parse_infer(body, None, Expect::Features(4)).unwrap();
        assert_eq!(r.outputs.len(), 1);
        let e = parse_infer(body, None, Expect::Features(3)).unwrap_err();
        assert!(e.0.contains("the model takes 3 features"), "{e}");
        let body = br#"{"inputs":[{"name":"x","shape":[1,3],"datatype":"FP32","data":[1,2]}]}"#;
        let e = parse_infer(body, None, Expect::Features(3)).unwrap_err();
        assert!(e.0.contains("holds 3 elements, the data 2"), "{e}");
        let body = br#"{"inputs":[{"name":"x","shape":[1,2],"datatype":"FP32","data":[1,"a"]}]}"#;
        assert!(parse_infer(body, None, Expect::Features(2)).is_err());
        let body = br#"{"inputs":[{"name":"x","shape":[1,2],"datatype":"FP32","data":[1,2]},{"name":"y","shape":[1,2],"datatype":"FP32","data":[1,2]}]}"#;
        assert!(parse_infer(body, None, Expect::Features(2)).is_err());
        let body = br#"{"inputs":[{"name":"x","shape":[1,2],"datatype":"WHAT","data":[1,2]}]}"#;
        assert!(parse_infer(body, None, Expect::Features(2)).is_err());
        let body = br#"{"inputs":[{"name":"x","shape":[99999999999,99999999999],"datatype":"FP32","data":[1,2]}]}"#;
        assert!(parse_infer(body, None, Expect::Features(2)).is_err());
        // Found by the fuzzer: no rows, but trailing sizes whose product
        // overflows (a panic with overflow checks, a wrong match without).
        let body = br#"{"inputs":[{"name":"x","shape":[0,2997999999999998,99990],"datatype":"FP32","data":[]}]}"#;
        let e = parse_infer(body, None, Expect::Features(2)).unwrap_err();
        assert!(e.0.contains("is not [rows, 2]"), "{e}");
        let body = br#"{"inputs":[{"name":"x","shape":[0,2],"datatype":"FP32","data":[]}]}"#;
        let e = parse_infer(body, None, Expect::Features(2)).unwrap_err();
        assert_eq!(e.0, "the request holds no rows");
    }

    #[test]
    fn binary_extension_in_and_out() {
        let head = br#"{"inputs":[{"name":"x","shape":[1,2],"datatype":"FP32","parameters":{"binary_data_size":8}}],"outputs":[{"name":"score","parameters":{"binary_data":true}}]}"#;
        let mut body = head.to_vec();
        body.extend_from_slice(&1.5f32.to_le_bytes());
        body.extend_from_slice(&(-2f32).to_le_bytes());
        let r = parse_infer(&body, Some(head.len()), Expect::Features(2)).unwrap();
        assert_eq!(rows(&r), [1.5, -2.0]);
        assert!(r.outputs[0].binary);
        assert!(parse_infer(&body, Some(head.len() + 1), Expect::Features(2)).is_err());
        assert!(parse_infer(&body, Some(body.len() + 1), Expect::Features(2)).is_err());
        let p = Predictions {
            shape: Shape::Binary,
            rows: 1,
            width: 1,
            labels: vec![1],
            values: vec![0.75],
        };
        let out = write_infer("m", None, &p, &r.outputs, false).unwrap();
        let n = out.json_len.unwrap();
        let v: Value = serde_json::from_slice(&out.body[..n]).unwrap();
        assert_eq!(v["outputs"][0]["parameters"]["binary_data_size"], 4);
        assert_eq!(out.body[n..], 0.75f32.to_le_bytes());
        let text_head = br#"{"inputs":[{"name":"t","shape":[1],"datatype":"BYTES","parameters":{"binary_data_size":6}}]}"#;
        let mut body = text_head.to_vec();
        body.extend_from_slice(&2u32.to_le_bytes());
        body.extend_from_slice(b"hi");
        let r = parse_infer(&body, Some(text_head.len()), Expect::Text).unwrap();
        assert_eq!(r.input, Input::Texts(vec!["hi".into()]));
        assert!(f16_to_f32(0x3c00) == 1.0 && f16_to_f32(0xc000) == -2.0);
    }

    #[test]
    fn json_outputs() {
        let p = Predictions {
            shape: Shape::Multiclass,
            rows: 1,
            width: 3,
            labels: vec![2],
            values: vec![0.25, 0.25, 0.5],
        };
        let out = write_infer("iris", Some("7"), &p, &[], false).unwrap();
        assert!(out.json_len.is_none());
        let v: Value = serde_json::from_slice(&out.body).unwrap();
        assert_eq!(v["model_name"], "iris");
        assert_eq!(v["id"], "7");
        assert_eq!(v["outputs"][0]["name"], "predicted_label");
        assert_eq!(v["outputs"][0]["data"], json!([2]));
        assert_eq!(v["outputs"][1]["shape"], json!([1, 3]));
        assert_eq!(v["outputs"][1]["data"], json!([0.25, 0.25, 0.5]));
        let only = [RequestedOutput {
            name: "nope".into(),
            binary: false,
        }];
        assert!(write_infer("iris", None, &p, &only, false).is_err());
    }
}
