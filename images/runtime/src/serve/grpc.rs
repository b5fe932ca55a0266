//! The Open Inference Protocol over gRPC (`inference.GRPCInferenceService`,
//! proto/grpc_predict_v2.proto), on its own port. Requests go through the
//! same tensor parsing ([`v2`]) and model workers as the REST routes; input
//! data is taken from `raw_input_contents` or the typed `contents`, and
//! outputs are returned as `raw_output_contents` (little-endian), as
//! Triton's server does.

use std::borrow::Cow;
use std::sync::Arc;
use std::time::Instant;

use serde_json::json;
use tonic::{Request, Response, Status};

use super::codec::BadInput;
use super::http::{ApiError, App};
use super::predictions::Predictions;
use super::v2;

/// The generated messages and service.
#[allow(clippy::all, clippy::pedantic)]
pub mod pb {
    tonic::include_proto!("inference");
}

use pb::grpc_inference_service_server::{GrpcInferenceService, GrpcInferenceServiceServer};
use pb::model_infer_request::InferInputTensor;
use pb::model_infer_response::InferOutputTensor;
use pb::model_metadata_response::TensorMetadata;

/// The service over the server's models.
pub struct Service {
    app: Arc<App>,
}

/// The tonic service of `app`, with the payload limit as the largest message.
pub fn service(app: Arc<App>) -> GrpcInferenceServiceServer<Service> {
    let limit = app.payload_limit;
    GrpcInferenceServiceServer::new(Service { app })
        .max_decoding_message_size(limit)
        .max_encoding_message_size(usize::MAX)
}

impl From<ApiError> for Status {
    fn from(e: ApiError) -> Status {
        let message = e.message();
        match e {
            ApiError::TooLarge(_) => Status::resource_exhausted(message),
            ApiError::Bad(_) | ApiError::MediaType(_) | ApiError::NotAcceptable(_) => {
                Status::invalid_argument(message)
            }
            ApiError::NotFound(_) => Status::not_found(message),
            ApiError::Conflict(_) => Status::already_exists(message),
            ApiError::NoMemory(_) => Status::resource_exhausted(message),
            ApiError::Unavailable(_) => Status::unavailable(message),
            ApiError::Internal(_) => Status::internal(message),
        }
    }
}

impl Service {
    /// Counts the call like the REST routes do (`route` label `grpc_*`).
    fn finish<T>(
        &self,
        route: &'static str,
        start: Instant,
        reply: Result<T, ApiError>,
    ) -> Result<Response<T>, Status> {
        let m = &self.app.metrics;
        match reply {
            Ok(v) => {
                m.request(route, 200, start.elapsed());
                Ok(Response::new(v))
            }
            Err(e) => {
                m.error(e.kind());
                m.request(route, e.status().as_u16(), start.elapsed());
                if let ApiError::Internal(detail) = &e {
                    tracing::error!(route, error = %detail, "request failed");
                }
                Err(e.into())
            }
        }
    }
}

/// The REST check of a version; gRPC sends an empty one for "any".
fn check_version(version: &str) -> Result<(), ApiError> {
    super::http::check_version((!version.is_empty()).then_some(version))
}

/// The input tensor's data as the binary tensor extension lays it out:
/// the raw bytes, or the typed contents encoded little-endian.
fn input_bytes<'a>(t: &InferInputTensor, raw: Option<&'a [u8]>) -> Result<Cow<'a, [u8]>, BadInput> {
    if let Some(raw) = raw {
        return Ok(Cow::Borrowed(raw));
    }
    let c = t.contents.clone().unwrap_or_default();
    let mut out = Vec::new();
    match t.datatype.as_str() {
        "FP32" => c
            .fp32_contents
            .iter()
            .for_each(|v| out.extend(v.to_le_bytes())),
        "FP64" => c
            .fp64_contents
            .iter()
            .for_each(|v| out.extend(v.to_le_bytes())),
        "INT8" => c.int_contents.iter().for_each(|&v| out.push(v as i8 as u8)),
        "INT16" => c
            .int_contents
            .iter()
            .for_each(|&v| out.extend((v as i16).to_le_bytes())),
        "INT32" => c
            .int_contents
            .iter()
            .for_each(|v| out.extend(v.to_le_bytes())),
        "INT64" => c
            .int64_contents
            .iter()
            .for_each(|v| out.extend(v.to_le_bytes())),
        "UINT8" => c.uint_contents.iter().for_each(|&v| out.push(v as u8)),
        "UINT16" => c
            .uint_contents
            .iter()
            .for_each(|&v| out.extend((v as u16).to_le_bytes())),
        "UINT32" => c
            .uint_contents
            .iter()
            .for_each(|v| out.extend(v.to_le_bytes())),
        "UINT64" => c
            .uint64_contents
            .iter()
            .for_each(|v| out.extend(v.to_le_bytes())),
        "BOOL" => c.bool_contents.iter().for_each(|&v| out.push(u8::from(v))),
        "BYTES" => {
            for s in &c.bytes_contents {
                let len = u32::try_from(s.len())
                    .map_err(|_| BadInput::new("a BYTES element is over 4 GiB"))?;
                out.extend(len.to_le_bytes());
                out.extend_from_slice(s);
            }
        }
        // Unknown types are refused by the tensor parser with the list.
        _ => {}
    }
    Ok(Cow::Owned(out))
}

/// Parses the request's one input tensor into rows for `expect`.
fn parse_request(
    req: &pb::ModelInferRequest,
    expect: super::codec::Expect,
) -> Result<super::predictions::Input, BadInput> {
    let [tensor] = &req.inputs[..] else {
        return Err(BadInput::new(format!(
            "the model takes one input tensor, the request has {}",
            req.inputs.len()
        )));
    };
    if req.raw_input_contents.len() > 1 {
        return Err(BadInput::new(format!(
            "{} raw_input_contents for one input",
            req.raw_input_contents.len()
        )));
    }
    let data = input_bytes(tensor, req.raw_input_contents.first().map(|b| &b[..]))?;
    let head = json!({
        "name": tensor.name,
        "datatype": tensor.datatype,
        "shape": tensor.shape,
        "parameters": {"binary_data_size": data.len()},
    });
    let mut rest = &data[..];
    let input = v2::parse_tensor(&head, &mut rest, expect)?;
    if input.rows() == 0 {
        return Err(BadInput::new("the request holds no rows"));
    }
    Ok(input)
}

/// The output tensors of `p` (all, or the names asked for), raw.
fn outputs(
    p: &Predictions,
    asked: &[pb::model_infer_request::InferRequestedOutputTensor],
) -> Result<(Vec<InferOutputTensor>, Vec<Vec<u8>>), BadInput> {
    let (label_name, value_name) = p.shape.output_names();
    let known: Vec<&str> = [label_name, value_name].into_iter().flatten().collect();
    for o in asked {
        if !known.contains(&o.name.as_str()) {
            return Err(BadInput::new(format!(
                "unknown output {:?}: the model has {}",
                o.name,
                known.join(", ")
            )));
        }
    }
    let wanted = |name: &str| asked.is_empty() || asked.iter().any(|o| o.name == name);
    let (mut tensors, mut raw) = (Vec::new(), Vec::new());
    let rows = p.rows as i64;
    if let Some(name) = label_name.filter(|n| wanted(n)) {
        tensors.push(InferOutputTensor {
            name: name.into(),
            datatype: "INT64".into(),
            shape: vec![rows],
            ..Default::default()
        });
        raw.push(p.labels.iter().flat_map(|l| l.to_le_bytes()).collect());
    }
    if let Some(name) = value_name.filter(|n| wanted(n)) {
        let flat = p.shape.flat_values(p.width);
        tensors.push(InferOutputTensor {
            name: name.into(),
            datatype: "FP32".into(),
            shape: if flat {
                vec![rows]
            } else {
                vec![rows, p.width as i64]
            },
            ..Default::default()
        });
        raw.push(p.values.iter().flat_map(|v| v.to_le_bytes()).collect());
    }
    Ok((tensors, raw))
}

#[tonic::async_trait]
impl GrpcInferenceService for Service {
    async fn server_live(
        &self,
        _: Request<pb::ServerLiveRequest>,
    ) -> Result<Response<pb::ServerLiveResponse>, Status> {
        self.finish(
            "grpc_health",
            Instant::now(),
            Ok(pb::ServerLiveResponse { live: true }),
        )
    }

    async fn server_ready(
        &self,
        _: Request<pb::ServerReadyRequest>,
    ) -> Result<Response<pb::ServerReadyResponse>, Status> {
        self.finish(
            "grpc_health",
            Instant::now(),
            Ok(pb::ServerReadyResponse { ready: true }),
        )
    }

    async fn model_ready(
        &self,
        request: Request<pb::ModelReadyRequest>,
    ) -> Result<Response<pb::ModelReadyResponse>, Status> {
        let start = Instant::now();
        let r = request.into_inner();
        let reply = check_version(&r.version).map(|()| pb::ModelReadyResponse {
            ready: self.app.knows(&r.name),
        });
        self.finish("grpc_model_ready", start, reply)
    }

    async fn server_metadata(
        &self,
        _: Request<pb::ServerMetadataRequest>,
    ) -> Result<Response<pb::ServerMetadataResponse>, Status> {
        let reply = pb::ServerMetadataResponse {
            name: "kiln".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            extensions: vec![],
        };
        self.finish("grpc_metadata", Instant::now(), Ok(reply))
    }

    async fn model_metadata(
        &self,
        request: Request<pb::ModelMetadataRequest>,
    ) -> Result<Response<pb::ModelMetadataResponse>, Status> {
        let start = Instant::now();
        let r = request.into_inner();
        let reply = async {
            check_version(&r.version)?;
            let w = super::http::worker(&self.app, Some(&r.name)).await?;
            let i = &w.info;
            let v = v2::model_metadata(&r.name, &i.algorithm, i.expect, i.shape, i.width);
            let tensors = |key: &str| -> Vec<TensorMetadata> {
                v[key]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|t| TensorMetadata {
                        name: t["name"].as_str().unwrap_or_default().into(),
                        datatype: t["datatype"].as_str().unwrap_or_default().into(),
                        shape: t["shape"]
                            .as_array()
                            .into_iter()
                            .flatten()
                            .filter_map(|d| d.as_i64())
                            .collect(),
                    })
                    .collect()
            };
            Ok(pb::ModelMetadataResponse {
                name: r.name.clone(),
                versions: vec![v2::MODEL_VERSION.into()],
                platform: v["platform"].as_str().unwrap_or_default().into(),
                inputs: tensors("inputs"),
                outputs: tensors("outputs"),
            })
        }
        .await;
        self.finish("grpc_model_metadata", start, reply)
    }

    async fn model_infer(
        &self,
        request: Request<pb::ModelInferRequest>,
    ) -> Result<Response<pb::ModelInferResponse>, Status> {
        let start = Instant::now();
        let req = request.into_inner();
        let reply = async {
            check_version(&req.model_version)?;
            let worker = super::http::worker(&self.app, Some(&req.model_name)).await?;
            let expect = worker.info.expect;
            // Parsing large tensors is CPU work: off the async threads.
            let (req, input) = tokio::task::spawn_blocking(move || {
                let input = parse_request(&req, expect);
                (req, input)
            })
            .await
            .map_err(|e| ApiError::Internal(e.to_string()))?;
            let predictions = worker.predict(input?).await?;
            let (outputs, raw_output_contents) = outputs(&predictions, &req.outputs)?;
            Ok(pb::ModelInferResponse {
                model_name: req.model_name,
                model_version: v2::MODEL_VERSION.into(),
                id: req.id,
                outputs,
                raw_output_contents,
                ..Default::default()
            })
        }
        .await;
        self.finish("grpc_infer", start, reply)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::serve::codec::Expect;
    use crate::serve::predictions::Input;

    fn tensor(
        datatype: &str,
        shape: Vec<i64>,
        contents: pb::InferTensorContents,
    ) -> InferInputTensor {
        InferInputTensor {
            name: "input-0".into(),
            datatype: datatype.into(),
            shape,
            contents: Some(contents),
            ..Default::default()
        }
    }

    fn request(t: InferInputTensor, raw: Vec<Vec<u8>>) -> pb::ModelInferRequest {
        pb::ModelInferRequest {
            model_name: "m".into(),
            inputs: vec![t],
            raw_input_contents: raw,
            ..Default::default()
        }
    }

    #[test]
    fn typed_and_raw_contents_give_the_same_rows() {
        let values = [1.5f32, 2.0, -3.0, 4.25, 5.0, 6.0];
        let typed = request(
            tensor(
                "FP32",
                vec![2, 3],
                pb::InferTensorContents {
                    fp32_contents: values.to_vec(),
                    ..Default::default()
                },
            ),
            vec![],
        );
        let raw = request(
            tensor("FP32", vec![2, 3], Default::default()),
            vec![values.iter().flat_map(|v| v.to_le_bytes()).collect()],
        );
        let expected = Input::Rows {
            values: values.to_vec(),
            features: 3,
        };
        assert_eq!(
            parse_request(&typed, Expect::Features(3)).unwrap(),
            expected
        );
        assert_eq!(parse_request(&raw, Expect::Features(3)).unwrap(), expected);
        let ints = request(
            tensor(
                "INT64",
                vec![1, 3],
                pb::InferTensorContents {
                    int64_contents: vec![1, 2, 3],
                    ..Default::default()
                },
            ),
            vec![],
        );
        assert_eq!(
            parse_request(&ints, Expect::Features(3)).unwrap(),
            Input::Rows {
                values: vec![1.0, 2.0, 3.0],
                features: 3
            }
        );
    }

    #[test]
    fn texts_and_bad_tensors() {
        let texts = request(
            tensor(
                "BYTES",
                vec![2],
                pb::InferTensorContents {
                    bytes_contents: vec![b"good film".to_vec(), b"bad".to_vec()],
                    ..Default::default()
                },
            ),
            vec![],
        );
        assert_eq!(
            parse_request(&texts, Expect::Text).unwrap(),
            Input::Texts(vec!["good film".into(), "bad".into()])
        );
        let wrong_width = request(
            tensor(
                "FP32",
                vec![1, 2],
                pb::InferTensorContents {
                    fp32_contents: vec![1.0, 2.0],
                    ..Default::default()
                },
            ),
            vec![],
        );
        let e = parse_request(&wrong_width, Expect::Features(3)).unwrap_err();
        assert!(e.0.contains('3'), "{}", e.0);
        let short = request(
            tensor("FP32", vec![2, 3], Default::default()),
            vec![vec![0u8; 8]],
        );
        assert!(parse_request(&short, Expect::Features(3)).is_err());
        let two = pb::ModelInferRequest {
            inputs: vec![
                tensor("FP32", vec![1, 3], Default::default()),
                tensor("FP32", vec![1, 3], Default::default()),
            ],
            ..Default::default()
        };
        assert!(
            parse_request(&two, Expect::Features(3))
                .unwrap_err()
                .0
                .contains("one input tensor")
        );
    }
}
