//! SageMaker bodies: any bytes in any format, for a tabular or a text
//! model; what parses must write back without a panic.
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
use codec::{Expect, Format};
use predictions::{Predictions, Shape};

fuzz_target!(|data: &[u8]| {
    let Some((&sel, body)) = data.split_first() else {
        return;
    };
    let format = [Format::Csv, Format::Json, Format::JsonLines][usize::from(sel % 3)];
    let expect = match (sel >> 2) % 4 {
        0 => Expect::Text,
        n => Expect::Features(usize::from(n) * 2 - 1),
    };
    let _ = Format::from_content_type(&String::from_utf8_lossy(body));
    let _ = Format::from_accept(&String::from_utf8_lossy(body));
    if let Ok(input) = codec::parse(format, body, expect) {
        let rows = input.rows();
        assert!(rows > 0);
        if let Expect::Features(d) = expect {
            match &input {
                predictions::Input::Rows { values, .. } => {
                    assert_eq!(values.len(), rows * d);
                    assert!(values.iter().all(|v| v.is_finite()));
                }
                predictions::Input::Texts(_) => panic!("texts for a tabular model"),
            }
        }
        let shapes = [
            Shape::Regressor,
            Shape::Binary,
            Shape::Multiclass,
            Shape::Label,
            Shape::Clustering,
            Shape::Projection,
        ];
        let shape = shapes[usize::from(sel >> 4) % shapes.len()];
        let width = match shape {
            Shape::Label => 0,
            Shape::Multiclass | Shape::Projection => 3,
            _ => 1,
        };
        let p = Predictions {
            shape,
            rows,
            width,
            labels: (0..rows as i64).collect(),
            values: (0..rows * width).map(|i| i as f32 * 0.5).collect(),
        };
        let out = codec::write(format, &p);
        if format == Format::Json {
            serde_json::from_slice::<serde_json::Value>(&out).expect("valid JSON out");
        }
    }
});
