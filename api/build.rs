//! Let binaries find the prebuilt libduckdb.so at run time without LD_LIBRARY_PATH:
//! `scripts/setup` puts it in `.deps/duckdb`, `.cargo/config.toml` points DUCKDB_LIB_DIR at it
//! for the link, and this adds the same directory as an rpath.
//!
//! Also embeds the web UI: every file `scripts/build-ui` wrote to `ui/dist` (with its `.gz`
//! twin) becomes an entry of `ASSETS` in `$OUT_DIR/ui_assets.rs`; without a `ui/dist` the
//! list is empty and `/ui/` says how to build it.
//!
//! And the `http-check` component the platform tenant's probes run (`PROBE_WASM` in
//! `$OUT_DIR/probe_wasm.rs`), as `scripts/build-guests` built it; `None` without it.

fn main() {
    embed_ui();
    embed_probe();
    println!("cargo:rerun-if-env-changed=DUCKDB_LIB_DIR");
    if let Ok(dir) = std::env::var("DUCKDB_LIB_DIR") {
        let lib = std::path::Path::new(&dir).join("libduckdb.so");
        if !lib.exists() {
            println!("cargo:warning=libduckdb.so is missing from {dir}; run scripts/setup first");
        }
        println!("cargo:rustc-link-arg=-Wl,-rpath,{dir}");
    }
}

fn embed_ui() {
    let manifest = std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets it");
    let dist = std::path::Path::new(&manifest).join("../ui/dist");
    println!("cargo:rerun-if-changed={}", dist.display());
    let mut names: Vec<String> = std::fs::read_dir(&dist)
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
                .filter_map(|e| e.file_name().into_string().ok())
                .filter(|n| !n.ends_with(".gz"))
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    let mut code = String::from(
        "/// The UI's files (built by scripts/build-ui).\n\
         pub static ASSETS: &[Asset] = &[\n",
    );
    for name in names {
        let path = dist.join(&name).canonicalize().expect("listed above");
        let gz = path.with_file_name(format!("{name}.gz"));
        let gz = if gz.exists() {
            format!("Some(include_bytes!({:?}))", gz.display().to_string())
        } else {
            "None".to_string()
        };
        code.push_str(&format!(
            "    Asset {{ name: {name:?}, raw: include_bytes!({:?}), gz: {gz} }},\n",
            path.display().to_string()
        ));
    }
    code.push_str("];\n");
    let out = std::path::Path::new(&std::env::var("OUT_DIR").expect("cargo sets it"))
        .join("ui_assets.rs");
    std::fs::write(out, code).expect("writing ui_assets.rs");
}

fn embed_probe() {
    let manifest = std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets it");
    let release = std::path::Path::new(&manifest).join("../guests/target/wasm32-wasip2/release");
    let wasm = release.join("http_check.wasm");
    let code = match wasm.canonicalize() {
        Ok(path) => {
            println!("cargo:rerun-if-changed={}", path.display());
            format!(
                "/// The http-check component (built by scripts/build-guests).\n\
                 pub static PROBE_WASM: Option<&[u8]> = Some(include_bytes!({:?}));\n",
                path.display().to_string()
            )
        }
        Err(_) => {
            // Rebuilt once the guests are: the nearest directory that exists changes then.
            let watch = [
                release.as_path(),
                &release.join("../.."),
                &release.join("../../.."),
            ]
            .into_iter()
            .find(|d| d.exists())
            .map(|d| d.to_path_buf())
            .unwrap_or(release.clone());
            println!("cargo:rerun-if-changed={}", watch.display());
            "/// Not built into this binary (run scripts/build-guests first).\n\
             pub static PROBE_WASM: Option<&[u8]> = None;\n"
                .to_string()
        }
    };
    let out = std::path::Path::new(&std::env::var("OUT_DIR").expect("cargo sets it"))
        .join("probe_wasm.rs");
    std::fs::write(out, code).expect("writing probe_wasm.rs");
}
