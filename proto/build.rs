//! Compiles `palisade/v1/*.proto` with protox (pure Rust, no protoc needed).
//! Messages are always generated; tonic client and server code only with the
//! `tonic` feature, so the wasm filter links prost alone.

use std::{env, fs, path::PathBuf};

use prost::Message;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protos = ["palisade/v1/scorer.proto"];
    for proto in protos {
        println!("cargo:rerun-if-changed={proto}");
    }
    let fds = protox::compile(protos, ["."])?;
    let out_dir = PathBuf::from(env::var("OUT_DIR")?);
    fs::write(out_dir.join("palisade_descriptor.bin"), fds.encode_to_vec())?;

    if env::var_os("CARGO_FEATURE_TONIC").is_some() {
        tonic_prost_build::configure()
            .build_client(true)
            .build_server(true)
            .compile_fds(fds)?;
    } else {
        prost_build::Config::new().compile_fds(fds)?;
    }
    Ok(())
}
