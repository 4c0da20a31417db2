//! Fails early, with the command that fixes it, when the C libraries netfence links
//! (libnftnl, libmnl) or their pkg-config files are missing.

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    let hint = "install the build dependencies: apt-get install -y pkg-config libnftnl-dev \
                libmnl-dev clang libclang-dev (see README.md)";
    for (lib, min) in [("libnftnl", "1.2.0"), ("libmnl", "1.0.3")] {
        if let Err(e) = pkg_config::Config::new()
            .atleast_version(min)
            .cargo_metadata(false)
            .probe(lib)
        {
            panic!("\n\nnetfence needs {lib} >= {min}, which pkg-config can't find: {e}\nFix: {hint}\n\n");
        }
    }
}
