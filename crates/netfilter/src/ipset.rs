//! The ipset netlink protocol (placeholder while it is written).

/// ipset's private error codes (`IPSET_ERR_*`, above 4096) as text.
pub fn ipset_errno_text(_errno: i32) -> Option<&'static str> {
    None
}
