//! Rebuilds the crate when a migration or a NATS definition changes, since both are embedded.
fn main() {
    println!("cargo:rerun-if-changed=../migrations");
    println!("cargo:rerun-if-changed=../nats");
}
