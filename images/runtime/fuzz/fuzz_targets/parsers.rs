// The parsers' source files, compiled as they are in kiln-runtime.
#[allow(dead_code)]
pub mod serve {
    #[path = "../../../src/serve/codec.rs"]
    pub mod codec;
    #[path = "../../../src/serve/predictions.rs"]
    pub mod predictions;
    #[path = "../../../src/serve/v2.rs"]
    pub mod v2;
}
