//! The generated gRPC code for tests and examples is checked in, so that
//! users of finmesh never need `protoc`. This test regenerates it with
//! `tonic-prost-build` and the vendored `protoc` (or `$PROTOC` when set) and
//! fails when the checked-in copy is stale. Run with `FINMESH_BLESS=1` to
//! rewrite the checked-in files.

use std::path::{Path, PathBuf};

/// (proto file, include dir, generated file name, checked-in path)
const PROTOS: &[(&str, &str, &str, &str)] = &[
    (
        "proto/finmesh/test/v1/echo.proto",
        "proto",
        "finmesh.test.v1.rs",
        "tests/support/pb/finmesh.test.v1.rs",
    ),
    (
        "examples/gateway/proto/ledger.proto",
        "examples/gateway/proto",
        "finmesh.gateway.v1.rs",
        "examples/gateway/pb/finmesh.gateway.v1.rs",
    ),
];

fn protoc() -> PathBuf {
    std::env::var_os("PROTOC")
        .map(PathBuf::from)
        .unwrap_or_else(|| protoc_bin_vendored::protoc_bin_path().expect("vendored protoc"))
}

fn generate(proto: &Path, include: &Path, out: &Path) {
    let mut config = prost_build::Config::new();
    config.protoc_executable(protoc());
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .emit_rerun_if_changed(false)
        .out_dir(out)
        .compile_with_config(config, &[proto], &[include])
        .expect("protoc compiles the proto");
}

#[test]
fn checked_in_generated_code_is_fresh() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let bless = std::env::var_os("FINMESH_BLESS").is_some();
    let mut stale = Vec::new();
    for (proto, include, generated, checked_in) in PROTOS {
        let out = tempfile::tempdir().unwrap();
        generate(&root.join(proto), &root.join(include), out.path());
        let fresh = std::fs::read_to_string(out.path().join(generated)).unwrap();
        let path = root.join(checked_in);
        let current = std::fs::read_to_string(&path).unwrap_or_default();
        if fresh != current {
            if bless {
                std::fs::create_dir_all(path.parent().unwrap()).unwrap();
                std::fs::write(&path, fresh).unwrap();
            } else {
                stale.push(*checked_in);
            }
        }
    }
    assert!(
        stale.is_empty(),
        "generated code is stale: {stale:?}; run `FINMESH_BLESS=1 cargo test --test proto_codegen`"
    );
}
