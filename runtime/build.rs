//! Let binaries find the prebuilt libduckdb.so at run time without LD_LIBRARY_PATH:
//! `scripts/setup` puts it in `.deps/duckdb`, `.cargo/config.toml` points DUCKDB_LIB_DIR at it
//! for the link, and this adds the same directory as an rpath.

fn main() {
    println!("cargo:rerun-if-env-changed=DUCKDB_LIB_DIR");
    if let Ok(dir) = std::env::var("DUCKDB_LIB_DIR") {
        let lib = std::path::Path::new(&dir).join("libduckdb.so");
        if !lib.exists() {
            println!("cargo:warning=libduckdb.so is missing from {dir}; run scripts/setup first");
        }
        println!("cargo:rustc-link-arg=-Wl,-rpath,{dir}");
    }
}
