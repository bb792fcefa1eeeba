//! Generates the Rust types and tonic client/server code for the etcd v3 API
//! protos and Berth's internal raft transport proto. Needs `protoc` on PATH
//! (or `PROTOC` set); nothing is downloaded.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protos = [
        "etcd/mvccpb/kv.proto",
        "etcd/authpb/auth.proto",
        "etcd/etcdserverpb/rpc.proto",
        "berth/raft.proto",
    ];
    // rpc.proto imports "mvccpb/kv.proto" and "authpb/auth.proto", so `etcd`
    // is an include root. Each file must be reachable through exactly one root,
    // or protoc would see it twice under two names.
    let includes = ["etcd", "berth"];
    for p in &protos {
        println!("cargo:rerun-if-changed={p}");
    }
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        .compile_protos(&protos, &includes)?;
    Ok(())
}
