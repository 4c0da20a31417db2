//! Raw bindings, made by bindgen, to the kernel UAPI headers that netfence speaks.
//!
//! The headers are vendored under `vendor/include` (see `vendor/README.md`) so that the
//! build never depends on the host's kernel headers. They cover:
//!
//! - the ipset netlink protocol: `linux/netfilter/ipset/ip_set.h` (commands `IPSET_CMD_*`,
//!   attributes `IPSET_ATTR_*`, errors `IPSET_ERR_*`, protocol `IPSET_PROTOCOL`);
//! - nfnetlink framing: `linux/netfilter/nfnetlink.h` (`NFNL_SUBSYS_*`, batch attributes);
//! - nf_tables attribute numbers: `linux/netfilter/nf_tables.h` and `nf_tables_compat.h`;
//! - the xtables info structs that iptables-nft places in `match` / `target` expressions:
//!   `xt_set.h`, `xt_comment.h`, `xt_multiport.h`, `xt_conntrack.h`, `xt_mark.h`,
//!   `xt_LOG.h`, `xt_NFLOG.h`, `xt_sctp.h`, `xt_tcpudp.h`, `ipt_REJECT.h`, `ip6t_REJECT.h`,
//!   and the conntrack state bits of `nf_conntrack_common.h`.
//!
//! This crate holds no logic; `netfence-netfilter` builds on it.

#![allow(
    non_upper_case_globals,
    non_camel_case_types,
    non_snake_case,
    missing_docs,
    clippy::all
)]

include!(concat!(env!("OUT_DIR"), "/bindings.rs"));

/// `XT_CONNTRACK_STATE_BIT(ctinfo)` = `1 << (ctinfo % IP_CT_IS_REPLY + 1)`, `xt_conntrack.h`.
pub const fn xt_conntrack_state_bit(ctinfo: u32) -> u32 {
    1 << (ctinfo % IP_CT_IS_REPLY + 1)
}
/// Conntrack state bit for `--ctstate SNAT` (`xt_conntrack.h`).
pub const XT_CONNTRACK_STATE_SNAT: u32 = 1 << (IP_CT_NUMBER + 1);
/// Conntrack state bit for `--ctstate DNAT` (`xt_conntrack.h`).
pub const XT_CONNTRACK_STATE_DNAT: u32 = 1 << (IP_CT_NUMBER + 2);
/// Conntrack state bit for `--ctstate UNTRACKED` (`xt_conntrack.h`).
pub const XT_CONNTRACK_STATE_UNTRACKED: u32 = 1 << (IP_CT_NUMBER + 3);
