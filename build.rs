//! Embeds the xterm.js files of the `GET /terminal` page (EXTENSIONS X70) when
//! `scripts/fetch-xterm.sh` has written them to `assets/terminal/vendor/`, and gzips the OpenAPI
//! document (`docs/openapi.json`, X1) into `$OUT_DIR/openapi.json.gz` for `src/api/openapi.rs`:
//! 342 KB of JSON take 46 KB gzipped in a static binary that has little room under its 8 MiB.
//!
//! Writes `$OUT_DIR/terminal_assets.rs`: an array expression of `(name, gzipped bytes)` pairs,
//! `include!`d by `src/api/terminal.rs`. When any file is missing the array is empty, the build
//! still succeeds (with a cargo warning), and the route answers 404 saying how to get the files.

use std::path::Path;

/// The files the page needs, as the fetch script names them (each stored as `<name>.gz`).
const FILES: [&str; 4] = ["xterm.js", "addon-fit.js", "xterm.css", "LICENSE.txt"];

fn main() {
    let root = std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR");
    let vendor = Path::new(&root).join("assets/terminal/vendor");
    // The directory that always exists (package.json is committed): cargo scans it recursively,
    // so fetching, refreshing or deleting vendor/ re-runs this script. A missing path would make
    // cargo re-run it on every build.
    println!("cargo:rerun-if-changed=assets/terminal");
    println!("cargo:rerun-if-changed=build.rs");
    // The static build links with this function order (scripts/build-static.sh passes its path
    // to the linker): a new order must relink, and cargo relinks what depends on a re-run script.
    println!("cargo:rerun-if-changed=scripts/link-order.txt");

    println!("cargo:rerun-if-changed=docs/openapi.json");
    let doc = Path::new(&root).join("docs/openapi.json");
    let doc = std::fs::read(&doc).unwrap_or_else(|e| panic!("reading {}: {e}", doc.display()));
    // No file name and mtime 0 in the header: the same document gives the same bytes.
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    std::io::Write::write_all(&mut gz, &doc).expect("gzip into memory");
    let gz = gz.finish().expect("gzip into memory");
    let out_dir = std::env::var("OUT_DIR").expect("cargo sets OUT_DIR");
    let out = Path::new(&out_dir).join("openapi.json.gz");
    std::fs::write(&out, gz).unwrap_or_else(|e| panic!("writing {}: {e}", out.display()));

    let paths: Vec<_> = FILES.iter().map(|f| vendor.join(format!("{f}.gz"))).collect();
    let complete = paths.iter().all(|p| p.is_file());
    let mut code = String::from("&[\n");
    if complete {
        for (name, path) in FILES.iter().zip(&paths) {
            code.push_str(&format!("    ({name:?}, include_bytes!({:?}).as_slice()),\n", path.display().to_string()));
        }
    } else {
        println!(
            "cargo:warning=xterm.js is not in assets/terminal/vendor: GET /terminal will answer 404 \
             (run scripts/fetch-xterm.sh, then build again)"
        );
    }
    code.push(']');
    let out = Path::new(&out_dir).join("terminal_assets.rs");
    std::fs::write(&out, code).unwrap_or_else(|e| panic!("writing {}: {e}", out.display()));
}
