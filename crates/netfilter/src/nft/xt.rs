//! The xtables info structs iptables-nft places in nf_tables `match` / `target`
//! expressions, built and read through the bindgen structs of `ipset-sys`.
//!
//! Each info blob is `XT_ALIGN(sizeof(struct))` bytes long (`x_tables.h`: aligned to 8),
//! which is what `nft_compat` checks against the kernel extension's size.

use std::mem::{size_of, MaybeUninit};

use ipset_sys as sys;

use super::rule::{CtState, PortDir, PortRange, RejectWith, SetDir};

/// `XT_ALIGN` (`linux/netfilter/x_tables.h`): alignment of `struct _xt_align`, 8 bytes.
pub const fn xt_align(n: usize) -> usize {
    (n + 7) & !7
}

/// A zero-initialised `T`. All the info structs are plain old data for which all-zero is
/// a valid value, and iptables zeroes them the same way before filling them.
fn zeroed<T: Copy>() -> T {
    // SAFETY: only instantiated with bindgen POD structs of integers and arrays.
    unsafe { MaybeUninit::<T>::zeroed().assume_init() }
}

/// `T` as its `XT_ALIGN`ed byte image.
fn to_bytes<T: Copy>(v: &T) -> Vec<u8> {
    let mut out = vec![0u8; xt_align(size_of::<T>())];
    // SAFETY: `out` has room for a T; write_unaligned has no alignment requirement.
    unsafe { std::ptr::write_unaligned(out.as_mut_ptr().cast::<T>(), *v) };
    out
}

/// Reads a `T` from an info blob, if the blob has exactly the kernel's size for it.
fn from_bytes<T: Copy>(b: &[u8]) -> Option<T> {
    if b.len() != xt_align(size_of::<T>()) {
        return None;
    }
    // SAFETY: length checked; POD type; read_unaligned has no alignment requirement.
    Some(unsafe { std::ptr::read_unaligned(b.as_ptr().cast::<T>()) })
}

fn put_cstr(dst: &mut [std::os::raw::c_char], s: &str) {
    for (d, b) in dst.iter_mut().zip(s.bytes()) {
        *d = b as std::os::raw::c_char;
    }
}

fn get_cstr(src: &[std::os::raw::c_char]) -> Option<String> {
    let bytes: Vec<u8> = src
        .iter()
        .map(|&c| c as u8)
        .take_while(|&b| b != 0)
        .collect();
    String::from_utf8(bytes).ok()
}

/// `-m comment` revision 0: `struct xt_comment_info` (`xt_comment.h`).
pub mod comment {
    use super::*;
    /// Extension name.
    pub const NAME: &str = "comment";
    /// Length of the info blob (`XT_ALIGN(sizeof(struct xt_comment_info))`).
    pub const INFO_LEN: usize = xt_align(size_of::<sys::xt_comment_info>());
    /// Longest comment (`XT_MAX_COMMENT_LEN` minus the NUL).
    pub const MAX_LEN: usize = sys::XT_MAX_COMMENT_LEN as usize - 1;

    /// Encodes the comment; the caller checked its length.
    pub fn encode(text: &str) -> Vec<u8> {
        let mut i: sys::xt_comment_info = zeroed();
        put_cstr(&mut i.comment[..MAX_LEN], text);
        to_bytes(&i)
    }

    /// Decodes a comment.
    pub fn decode(b: &[u8]) -> Option<String> {
        let i: sys::xt_comment_info = from_bytes(b)?;
        get_cstr(&i.comment)
    }
}

/// `-m set` revision 4: `struct xt_set_info_match_v4` (`xt_set.h`).
pub mod set {
    use super::*;
    /// Extension name.
    pub const NAME: &str = "set";
    /// Length of the info blob (`XT_ALIGN(sizeof(struct xt_set_info_match_v4))`).
    pub const INFO_LEN: usize = xt_align(size_of::<sys::xt_set_info_match_v4>());
    /// Revision.
    pub const REV: u32 = 4;

    /// Encodes a lookup of set `index`. Like libxt_set's `parse_dirs`, dimension `i`
    /// (1-based) is a source lookup when bit `i` of `flags` is set.
    pub fn encode(index: u16, dirs: &[SetDir], negate: bool) -> Vec<u8> {
        let mut i: sys::xt_set_info_match_v4 = zeroed();
        i.match_set.index = index;
        i.match_set.dim = dirs.len() as u8;
        for (n, d) in dirs.iter().enumerate() {
            if *d == SetDir::Src {
                i.match_set.flags |= 1 << (n + 1);
            }
        }
        if negate {
            i.match_set.flags |= sys::IPSET_INV_MATCH as u8;
        }
        // Counters compare nothing (IPSET_COUNTER_NONE = 0): left zero.
        to_bytes(&i)
    }

    /// Decodes to (index, dirs, negate); `None` for options netfence does not write
    /// (counter comparisons, `--return-nomatch`, `! --update-counters`).
    pub fn decode(b: &[u8]) -> Option<(u16, Vec<SetDir>, bool)> {
        let i: sys::xt_set_info_match_v4 = from_bytes(b)?;
        if i.flags != 0 || i.packets.op != 0 || i.bytes.op != 0 {
            return None;
        }
        let dim = i.match_set.dim as usize;
        if dim == 0 || dim > sys::IPSET_DIM_MAX as usize {
            return None;
        }
        let f = i.match_set.flags;
        if f >> (dim + 1) != 0 {
            return None;
        }
        let dirs = (1..=dim)
            .map(|n| {
                if f & (1 << n) != 0 {
                    SetDir::Src
                } else {
                    SetDir::Dst
                }
            })
            .collect();
        Some((i.match_set.index, dirs, f & sys::IPSET_INV_MATCH as u8 != 0))
    }
}

/// `-m multiport` revision 1: `struct xt_multiport_v1` (`xt_multiport.h`).
pub mod multiport {
    use super::*;
    /// Extension name.
    pub const NAME: &str = "multiport";
    /// Length of the info blob (`XT_ALIGN(sizeof(struct xt_multiport_v1))`).
    pub const INFO_LEN: usize = xt_align(size_of::<sys::xt_multiport_v1>());
    /// Revision.
    pub const REV: u32 = 1;
    /// Slots in the struct; a range takes two.
    pub const SLOTS: usize = sys::XT_MULTI_PORTS as usize;

    /// Slots `ports` need.
    pub fn slots(ports: &[PortRange]) -> usize {
        ports
            .iter()
            .map(|p| if p.is_single() { 1 } else { 2 })
            .sum()
    }

    /// Encodes; the caller checked that the ports fit in [`SLOTS`].
    pub fn encode(dir: PortDir, ports: &[PortRange], negate: bool) -> Vec<u8> {
        let mut i: sys::xt_multiport_v1 = zeroed();
        i.flags = match dir {
            PortDir::Source => sys::XT_MULTIPORT_SOURCE,
            PortDir::Destination => sys::XT_MULTIPORT_DESTINATION,
        } as u8;
        let mut n = 0;
        for p in ports {
            i.ports[n] = p.first;
            if !p.is_single() {
                // libxt_multiport marks the first slot of a range, then the last port.
                i.pflags[n] = 1;
                n += 1;
                i.ports[n] = p.last;
            }
            n += 1;
        }
        i.count = n as u8;
        i.invert = negate as u8;
        to_bytes(&i)
    }

    /// Decodes to (dir, ports, negate).
    pub fn decode(b: &[u8]) -> Option<(PortDir, Vec<PortRange>, bool)> {
        let i: sys::xt_multiport_v1 = from_bytes(b)?;
        let dir = match i.flags as u32 {
            sys::XT_MULTIPORT_SOURCE => PortDir::Source,
            sys::XT_MULTIPORT_DESTINATION => PortDir::Destination,
            _ => return None,
        };
        let count = i.count as usize;
        if count == 0 || count > SLOTS {
            return None;
        }
        let mut ports = Vec::new();
        let mut n = 0;
        while n < count {
            if i.pflags[n] != 0 {
                if n + 1 >= count {
                    return None;
                }
                ports.push(PortRange::range(i.ports[n], i.ports[n + 1]));
                n += 2;
            } else {
                ports.push(PortRange::single(i.ports[n]));
                n += 1;
            }
        }
        Some((dir, ports, i.invert != 0))
    }
}

/// `-m conntrack --ctstate` revision 3: `struct xt_conntrack_mtinfo3` (`xt_conntrack.h`).
pub mod conntrack {
    use super::*;
    /// Extension name.
    pub const NAME: &str = "conntrack";
    /// Length of the info blob (`XT_ALIGN(sizeof(struct xt_conntrack_mtinfo3))`).
    pub const INFO_LEN: usize = xt_align(size_of::<sys::xt_conntrack_mtinfo3>());
    /// Revision.
    pub const REV: u32 = 3;

    /// Encodes a state match.
    pub fn encode(states: CtState, negate: bool) -> Vec<u8> {
        let mut i: sys::xt_conntrack_mtinfo3 = zeroed();
        i.match_flags = sys::XT_CONNTRACK_STATE as u16;
        if negate {
            i.invert_flags = sys::XT_CONNTRACK_STATE as u16;
        }
        i.state_mask = states.0;
        to_bytes(&i)
    }

    /// Decodes a state-only match.
    pub fn decode(b: &[u8]) -> Option<(CtState, bool)> {
        let i: sys::xt_conntrack_mtinfo3 = from_bytes(b)?;
        let state = sys::XT_CONNTRACK_STATE as u16;
        if i.match_flags != state || i.invert_flags & !state != 0 {
            return None;
        }
        // A state-only match must carry nothing else; refuse anything we would drop.
        let mut probe = i;
        probe.match_flags = 0;
        probe.invert_flags = 0;
        probe.state_mask = 0;
        if to_bytes(&probe).iter().any(|&b| b != 0) {
            return None;
        }
        Some((CtState(i.state_mask), i.invert_flags != 0))
    }
}

/// `-m sctp --sport/--dport` revision 0: `struct xt_sctp_info` (`xt_sctp.h`).
/// iptables-nft keeps SCTP ports as an xt match, unlike TCP and UDP ports.
pub mod sctp {
    use super::*;
    /// Extension name.
    pub const NAME: &str = "sctp";
    /// Length of the info blob (`XT_ALIGN(sizeof(struct xt_sctp_info))`).
    pub const INFO_LEN: usize = xt_align(size_of::<sys::xt_sctp_info>());

    /// Encodes; `None` ports are not matched.
    pub fn encode(sport: Option<(PortRange, bool)>, dport: Option<(PortRange, bool)>) -> Vec<u8> {
        // An unused side stays zero, as libxt_sctp leaves it; the flags say what counts.
        // libxt_sctp marks the unused chunk-flag slots with chunk type 0xff.
        let mut i: sys::xt_sctp_info = zeroed();
        for f in &mut i.flag_info {
            f.chunktype = u8::MAX;
        }
        if let Some((p, neg)) = sport {
            i.spts = [p.first, p.last];
            i.flags |= sys::XT_SCTP_SRC_PORTS;
            if neg {
                i.invflags |= sys::XT_SCTP_SRC_PORTS;
            }
        }
        if let Some((p, neg)) = dport {
            i.dpts = [p.first, p.last];
            i.flags |= sys::XT_SCTP_DEST_PORTS;
            if neg {
                i.invflags |= sys::XT_SCTP_DEST_PORTS;
            }
        }
        to_bytes(&i)
    }

    /// A decoded port selector: range and negation.
    pub type Ports = Option<(PortRange, bool)>;

    /// Decodes a ports-only match to (sport, dport).
    pub fn decode(b: &[u8]) -> Option<(Ports, Ports)> {
        let i: sys::xt_sctp_info = from_bytes(b)?;
        let known = sys::XT_SCTP_SRC_PORTS | sys::XT_SCTP_DEST_PORTS;
        if i.flags & !known != 0 || i.invflags & !known != 0 || i.chunk_match_type != 0 {
            return None;
        }
        let side = |bit: u32, pts: [u16; 2]| {
            (i.flags & bit != 0).then(|| (PortRange::range(pts[0], pts[1]), i.invflags & bit != 0))
        };
        Some((
            side(sys::XT_SCTP_SRC_PORTS, i.spts),
            side(sys::XT_SCTP_DEST_PORTS, i.dpts),
        ))
    }
}

/// `-j MARK --set-xmark` revision 2: `struct xt_mark_tginfo2` (`xt_mark.h`).
pub mod mark {
    use super::*;
    /// Extension name.
    pub const NAME: &str = "MARK";
    /// Length of the info blob (`XT_ALIGN(sizeof(struct xt_mark_tginfo2))`).
    pub const INFO_LEN: usize = xt_align(size_of::<sys::xt_mark_tginfo2>());
    /// Revision.
    pub const REV: u32 = 2;

    /// Encodes.
    pub fn encode(value: u32, mask: u32) -> Vec<u8> {
        to_bytes(&sys::xt_mark_tginfo2 { mark: value, mask })
    }

    /// Decodes to (value, mask).
    pub fn decode(b: &[u8]) -> Option<(u32, u32)> {
        let i: sys::xt_mark_tginfo2 = from_bytes(b)?;
        Some((i.mark, i.mask))
    }
}

/// `-j LOG` revision 0: `struct xt_log_info` (`xt_LOG.h`).
pub mod log {
    use super::*;
    /// Extension name.
    pub const NAME: &str = "LOG";
    /// Length of the info blob (`XT_ALIGN(sizeof(struct xt_log_info))`).
    pub const INFO_LEN: usize = xt_align(size_of::<sys::xt_log_info>());
    /// Longest prefix (30 bytes with the NUL).
    pub const MAX_PREFIX: usize = 29;

    /// Encodes.
    pub fn encode(prefix: Option<&str>, level: u8) -> Vec<u8> {
        let mut i: sys::xt_log_info = zeroed();
        i.level = level;
        if let Some(p) = prefix {
            put_cstr(&mut i.prefix[..MAX_PREFIX], p);
        }
        to_bytes(&i)
    }

    /// Decodes to (prefix, level); `None` with log flags netfence does not write.
    pub fn decode(b: &[u8]) -> Option<(Option<String>, u8)> {
        let i: sys::xt_log_info = from_bytes(b)?;
        if i.logflags != 0 || i.level > 7 {
            return None;
        }
        let p = get_cstr(&i.prefix)?;
        Some(((!p.is_empty()).then_some(p), i.level))
    }
}

/// `-j REJECT` revision 0: `ipt_reject_info` / `ip6t_reject_info`.
pub mod reject {
    use super::*;
    /// Extension name.
    pub const NAME: &str = "REJECT";
    /// Length of the info blob (`XT_ALIGN(sizeof(struct ip6t_reject_info))`).
    pub const INFO_LEN: usize = xt_align(size_of::<sys::ip6t_reject_info>());

    fn code(w: RejectWith, v6: bool) -> u32 {
        match (w, v6) {
            (RejectWith::PortUnreachable, false) => sys::IPT_ICMP_PORT_UNREACHABLE,
            (RejectWith::AdminProhibited, false) => sys::IPT_ICMP_HOST_PROHIBITED,
            (RejectWith::NetUnreachable, false) => sys::IPT_ICMP_NET_UNREACHABLE,
            (RejectWith::HostUnreachable, false) => sys::IPT_ICMP_HOST_UNREACHABLE,
            (RejectWith::TcpReset, false) => sys::IPT_TCP_RESET,
            (RejectWith::PortUnreachable, true) => sys::IP6T_ICMP6_PORT_UNREACH,
            (RejectWith::AdminProhibited, true) => sys::IP6T_ICMP6_ADM_PROHIBITED,
            (RejectWith::NetUnreachable, true) => sys::IP6T_ICMP6_NO_ROUTE,
            (RejectWith::HostUnreachable, true) => sys::IP6T_ICMP6_ADDR_UNREACH,
            (RejectWith::TcpReset, true) => sys::IP6T_TCP_RESET,
        }
    }

    /// Encodes for the table's family.
    pub fn encode(w: RejectWith, v6: bool) -> Vec<u8> {
        to_bytes(&sys::ip6t_reject_info { with: code(w, v6) })
    }

    /// Decodes for the table's family.
    pub fn decode(b: &[u8], v6: bool) -> Option<RejectWith> {
        let i: sys::ip6t_reject_info = from_bytes(b)?;
        [
            RejectWith::PortUnreachable,
            RejectWith::AdminProhibited,
            RejectWith::NetUnreachable,
            RejectWith::HostUnreachable,
            RejectWith::TcpReset,
        ]
        .into_iter()
        .find(|w| code(*w, v6) == i.with)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_match_the_kernel() {
        assert_eq!(comment::encode("x").len(), 256);
        assert_eq!(set::encode(0, &[SetDir::Src], false).len(), 48);
        assert_eq!(multiport::encode(PortDir::Source, &[], false).len(), 48);
        assert_eq!(conntrack::encode(CtState::NEW, false).len(), 168);
        assert_eq!(sctp::encode(None, None).len(), 296);
        assert_eq!(mark::encode(1, 1).len(), 8);
        assert_eq!(log::encode(None, 4).len(), 32);
        assert_eq!(reject::encode(RejectWith::PortUnreachable, false).len(), 8);
    }

    #[test]
    fn set_bytes() {
        // index 7, "src,dst", negated: dim 2, flags = IPSET_INV_MATCH | src bit 1.
        let b = set::encode(7, &[SetDir::Src, SetDir::Dst], true);
        assert_eq!(&b[..4], &[7, 0, 2, 0b011]);
        assert!(b[4..].iter().all(|&x| x == 0));
        assert_eq!(
            set::decode(&b),
            Some((7, vec![SetDir::Src, SetDir::Dst], true))
        );
    }

    #[test]
    fn multiport_bytes() {
        let ports = [PortRange::single(80), PortRange::range(8000, 8080)];
        let b = multiport::encode(PortDir::Destination, &ports, false);
        assert_eq!(b[0], 1); // XT_MULTIPORT_DESTINATION
        assert_eq!(b[1], 3); // count
        assert_eq!(&b[2..8], &[80, 0, 0x40, 0x1f, 0x90, 0x1f]);
        assert_eq!(&b[32..35], &[0, 1, 0]); // pflags
        assert_eq!(
            multiport::decode(&b),
            Some((PortDir::Destination, ports.to_vec(), false))
        );
    }

    #[test]
    fn conntrack_bytes() {
        let st = CtState::RELATED.or(CtState::ESTABLISHED);
        let b = conntrack::encode(st, false);
        // 8 addresses (128), expires (8), l4proto (2), 4 ports (8): match_flags at 146,
        // invert_flags at 148, state_mask at 150.
        assert_eq!(&b[146..152], &[1, 0, 0, 0, 6, 0]);
        assert_eq!(conntrack::decode(&b), Some((st, false)));
    }

    #[test]
    fn decoders_refuse_wrong_sizes() {
        assert_eq!(comment::decode(&[0; 8]), None);
        assert_eq!(set::decode(&[0; 47]), None);
        assert_eq!(mark::decode(&[]), None);
    }
}
