//! nf_tables and ipset spoken over netlink, with rules encoded exactly as `iptables-nft`
//! 1.8.9 encodes them, so that `iptables-nft-save` reads back everything netfence writes.
//!
//! This is the only netfence crate that does I/O. Layout:
//!
//! - [`nl`]: netlink framing, a writer and a bounds-checked reader (pure);
//! - [`socket`]: the `NETLINK_NETFILTER` socket, in any network namespace;
//! - [`nft`]: tables, chains and rules: the iptables-nft rule vocabulary, its encoder and
//!   decoder (through libnftnl), dumps, and atomic transactions with generation checks;
//! - [`ipset`]: the ipset protocol (7, falling back to 6), encoded and decoded here;
//! - [`rtnl`]: a small `NETLINK_ROUTE` client (veth pairs, addresses, routes) for the
//!   demo's sandbox, so that it starts no `ip` process;
//! - [`family`]: the address family both layers share;
//! - [`error`]: the crate's one error type.

#![warn(missing_docs)]

pub mod error;
pub mod family;
pub mod ipset;
pub mod nft;
pub mod nl;
pub mod rtnl;
pub mod socket;

pub use error::Error;
pub use family::Family;
pub use socket::{Answers, NetlinkSocket, Netns};
