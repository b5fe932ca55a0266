//! Validate: what the CRD's schema and CEL rules cannot say, checked before
//! anything is created. A refusal becomes the `Failed` condition with
//! reason `InvalidSpec` and a message that says what to fix.

use kiln_api::training_job::{InputMode, TrainingJobSpec};

fn remote(uri: &str) -> bool {
    ["s3://", "gs://", "az://"]
        .iter()
        .any(|s| uri.starts_with(s))
}

/// Refuses a spec this operator cannot run, with what to change.
pub fn validate(spec: &TrainingJobSpec) -> Result<(), String> {
    let pipe = spec.algorithm.input_mode == InputMode::Pipe
        || spec
            .inputs
            .iter()
            .any(|c| c.input_mode == Some(InputMode::Pipe));
    if pipe {
        return Err("inputMode Pipe is not supported: use File (channels are downloaded before training) or FastFile".into());
    }
    if !remote(&spec.output.location.uri) {
        return Err(format!(
            "output.location.uri {:?}: the model is uploaded to an object store, so it must be an s3://, gs:// or az:// URI",
            spec.output.location.uri
        ));
    }
    if let Some(ckpt) = &spec.checkpoint
        && !remote(&ckpt.location.uri)
    {
        return Err(format!(
            "checkpoint.location.uri {:?}: checkpoints are synced with an object store, so it must be an s3://, gs:// or az:// URI",
            ckpt.location.uri
        ));
    }
    if let Some(tb) = &spec.tensor_board_output
        && !remote(&tb.uri)
    {
        return Err(format!(
            "tensorBoardOutput.uri {:?} must be an s3://, gs:// or az:// URI",
            tb.uri
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(edit: impl FnOnce(&mut serde_json::Value)) -> TrainingJobSpec {
        let path = format!(
            "{}/../api/examples/trainingjob-builtin.yaml",
            env!("CARGO_MANIFEST_DIR")
        );
        let mut v: serde_json::Value =
            serde_yaml::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        edit(&mut v["spec"]);
        serde_json::from_value(v["spec"].clone()).unwrap()
    }

    #[test]
    fn the_examples_pass_and_what_cannot_run_is_refused() {
        validate(&spec(|_| {})).unwrap();
        let pipe = validate(&spec(|s| s["algorithm"]["inputMode"] = "Pipe".into())).unwrap_err();
        assert!(pipe.contains("Pipe is not supported"), "{pipe}");
        let pvc_out = validate(&spec(|s| {
            s["output"]["location"]["uri"] = "pvc://models/x".into()
        }))
        .unwrap_err();
        assert!(
            pvc_out.contains("output.location.uri \"pvc://models/x\""),
            "{pvc_out}"
        );
        let file_ckpt = validate(&spec(|s| {
            s["checkpoint"]["location"]["uri"] = "file:///tmp/c".into()
        }))
        .unwrap_err();
        assert!(file_ckpt.contains("checkpoint.location.uri"), "{file_ckpt}");
    }
}
