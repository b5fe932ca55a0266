//! Open Inference Protocol requests: JSON and binary tensor data, for a
//! tabular or a text model; what parses must write back without a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

// The parsers' source files, compiled as they are in kiln-runtime.
#[allow(dead_code)]
#[path = "../../src/serve/codec.rs"]
mod codec;
#[allow(dead_code)]
#[path = "../../src/serve/predictions.rs"]
mod predictions;
#[allow(dead_code)]
#[path = "../../src/serve/v2.rs"]
mod v2;
use codec::Expect;
use predictions::{Input, Predictions, Shape};

fuzz_target!(|data: &[u8]| {
    let Some((&sel, rest)) = data.split_first() else {
        return;
    };
    // Half the inputs carry an Inference-Header-Content-Length.
    let (json_len, body) = if sel & 1 == 1 && rest.len() >= 2 {
        (
            Some(usize::from(u16::from_le_bytes([rest[0], rest[1]]))),
            &rest[2..],
        )
    } else {
        (None, rest)
    };
    let expect = match (sel >> 1) % 4 {
        0 => Expect::Text,
        n => Expect::Features(usize::from(n) * 2),
    };
    if let Ok(r) = v2::parse_infer(body, json_len, expect) {
        let rows = r.input.rows();
        if let (Expect::Features(d), Input::Rows { values, .. }) = (expect, &r.input) {
            assert_eq!(values.len() % d, 0);
            assert!(values.iter().all(|v| v.is_finite()));
        }
        let p = Predictions {
            shape: Shape::Multiclass,
            rows,
            width: 2,
            labels: vec![1; rows],
            values: vec![0.5; rows * 2],
        };
        if let Ok(out) = v2::write_infer("m", r.id.as_deref(), &p, &r.outputs, r.binary_default) {
            let json = &out.body[..out.json_len.unwrap_or(out.body.len())];
            serde_json::from_slice::<serde_json::Value>(json).expect("valid JSON out");
        }
    }
});
