//! A client Kiln did not write: Triton's Python HTTP and gRPC clients
//! (tritonclient, installed from the package index into a cached virtual
//! environment by python-env.sh before the tests start) against `kiln-runtime serve`'s Open
//! Inference Protocol, REST and gRPC.

mod common;

use std::path::Path;
use std::process::Command;

use common::Job;
use common::server::{Server, dataset, train};

#[test]
fn tritonclient_talks_to_the_v2_api() {
    let here = Path::new(env!("CARGO_MANIFEST_DIR"));
    // Made before the tests start by `make test-unit` (python-env.sh clients).
    let python = std::env::var("KILN_CLIENTS_PYTHON").expect(
        "KILN_CLIENTS_PYTHON is not set: run the tests through `make test-unit`, which makes \
         the clients' environment (or set KILN_CLIENTS_PYTHON=$(images/runtime/python-env.sh clients))",
    );
    let model = train(
        "clients-iris",
        Job::new("linear-learner")
            .channel_from("train", &dataset("iris", "train"))
            .hp("predictor_type", "multiclass_classifier")
            .hp("num_classes", 3)
            .hp("epochs", 40)
            .hp("learning_rate", 0.05),
    );
    let server = Server::start(&["--model", model.to_str().unwrap(), "--model-name", "iris"]);
    for (script, addr) in [
        ("triton_v2.py", server.addr),
        ("triton_grpc.py", server.grpc_addr),
    ] {
        let out = Command::new(&python)
            .arg(here.join("tests/clients").join(script))
            .arg(addr.to_string())
            .arg("iris")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{script} failed:\n{}\n{}\nserver log:\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            server.log_text()
        );
        assert!(String::from_utf8_lossy(&out.stdout).contains("all checks passed"));
    }
}
