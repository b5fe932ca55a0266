//! Writes the CRDs generated from the types into each folder given, or with
//! `--check` fails when a folder's files differ from what the types generate.
//!
//! Usage: crdgen [--check] DIR...

use std::path::Path;
use std::process::ExitCode;

fn main() -> ExitCode {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let check = args.first().is_some_and(|a| a == "--check");
    if check {
        args.remove(0);
    }
    if args.is_empty() {
        eprintln!("usage: crdgen [--check] DIR...");
        return ExitCode::from(2);
    }
    let mut stale = Vec::new();
    for dir in &args {
        if let Err(e) = std::fs::create_dir_all(dir) {
            eprintln!("crdgen: cannot create {dir}: {e}");
            return ExitCode::FAILURE;
        }
        for crd in kiln_api::crd::all() {
            let path = Path::new(dir).join(kiln_api::crd::file_name(&crd));
            let yaml = match kiln_api::crd::to_yaml(&crd) {
                Ok(yaml) => yaml,
                Err(e) => {
                    eprintln!("crdgen: cannot render {}: {e}", path.display());
                    return ExitCode::FAILURE;
                }
            };
            if dir == &args[0] {
                println!("{}: {} bytes", path.display(), yaml.len());
            }
            if yaml.len() >= kiln_api::crd::MAX_CRD_BYTES {
                eprintln!(
                    "crdgen: {} is {} bytes, over the {} that kubectl apply and Argo CD can keep in an annotation",
                    path.display(),
                    yaml.len(),
                    kiln_api::crd::MAX_CRD_BYTES
                );
                return ExitCode::FAILURE;
            }
            if check {
                if std::fs::read_to_string(&path).ok().as_deref() != Some(yaml.as_str()) {
                    stale.push(path.display().to_string());
                }
            } else if let Err(e) = std::fs::write(&path, yaml) {
                eprintln!("crdgen: cannot write {}: {e}", path.display());
                return ExitCode::FAILURE;
            }
        }
    }
    if !stale.is_empty() {
        eprintln!(
            "crdgen: these files differ from what the API types generate; run `make crds` and commit:\n  {}",
            stale.join("\n  ")
        );
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}
