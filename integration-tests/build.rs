//! Builds the plugin components the tests load, the same way `cargo xtask plugins` does, so
//! `cargo test --workspace` needs nothing else.
fn main() {
    let root = xtask::repo_root();
    for dir in ["plugins", "sdk", "wit"] {
        println!("cargo:rerun-if-changed={}", root.join(dir).display());
    }
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR").expect("OUT_DIR")).join("plugins");
    match xtask::build_plugins(&out) {
        Ok(_) => println!("cargo:rustc-env=SLUICE_TEST_PLUGINS={}", out.display()),
        Err(e) => panic!("{e}"),
    }
}
