//! Runs bindgen over the UAPI headers vendored in `vendor/`, never the host's.

use std::path::PathBuf;

fn main() {
    let manifest = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets this"));
    let vendor = manifest.join("../../vendor");
    let include = vendor.join("include");
    let wrapper = vendor.join("wrapper.h");
    println!("cargo:rerun-if-changed={}", vendor.display());

    let bindings = bindgen::Builder::default()
        .header(wrapper.to_string_lossy())
        // -nostdinc keeps the host's kernel headers out: every include must resolve in vendor/.
        .clang_args(["-nostdinc", "-I", &include.to_string_lossy()])
        .allowlist_var("IPSET_.*|NFNL_.*|NFNETLINK_V0|IP_SET_.*|XT_.*|NF_CT_.*|IPT_.*|IP6T_.*|NFTA_.*|NFT_.*|IPSET_MAXNAMELEN")
        .allowlist_type("xt_.*|ipt_.*|ip6t_.*|ipset_.*|ip_conntrack_status|ip_conntrack_info|nfgenmsg|nft_.*|nfnetlink_groups|ip_set_.*|nf_tables_msg_types|nfnl_.*")
        .allowlist_function("$^")
        .derive_default(true)
        .derive_debug(true)
        .derive_eq(true)
        .layout_tests(true)
        .prepend_enum_name(false)
        .generate()
        .unwrap_or_else(|e| {
            panic!(
                "bindgen failed on vendor/wrapper.h: {e}. bindgen needs libclang: \
                 apt-get install clang libclang-dev"
            )
        });
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets this"));
    bindings
        .write_to_file(out.join("bindings.rs"))
        .expect("writing bindings.rs");
}
