//! The console's bundle (`web/dist`) is compiled into the binary by `include_dir!`, which
//! cargo cannot see into: rebuild when the bundle changes.
fn main() {
    println!("cargo:rerun-if-changed=../web/dist");
}
