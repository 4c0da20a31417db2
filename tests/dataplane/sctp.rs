//! SCTP INIT packets by hand, for a kernel without SCTP sockets (no `CONFIG_IP_SCTP`) but
//! with SCTP conntrack: a probe sends an INIT over a raw IP socket (protocol 132) and the
//! destination counts what arrives on a raw socket of its own.
//!
//! Without an SCTP stack nothing answers an INIT (no INIT ACK, no ABORT), so an SCTP probe
//! tells "arrived" from "dropped" only: there is no refusal.

use std::net::{IpAddr, Ipv4Addr};

/// IP protocol number of SCTP (RFC 4960 §1.2; `IPPROTO_SCTP` in `<netinet/in.h>`).
pub const PROTOCOL: u8 = 132;

/// Chunk type INIT (RFC 4960 §3.2).
const CHUNK_INIT: u8 = 1;
/// Common header (12 bytes, RFC 4960 §3.1) plus an INIT chunk without parameters
/// (20 bytes, §3.3.2).
const INIT_LEN: usize = 32;

/// CRC32c (Castagnoli, reflected polynomial 0x82F63B78), the SCTP checksum of RFC 4960
/// Appendix B. Bitwise: probes are 32 bytes long.
pub fn crc32c(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in data {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0x82F6_3B78
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// The fields of an INIT that identify a probe.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Init {
    /// Source port.
    pub src_port: u16,
    /// Destination port.
    pub dst_port: u16,
    /// The chunk's Initiate Tag (must not be 0).
    pub tag: u32,
}

impl Init {
    /// The packet: common header with verification tag 0 (an INIT's, §8.5.1), one INIT
    /// chunk, and the CRC32c over both with the checksum field zeroed, stored as the
    /// Linux stack stores it (`sctp_compute_cksum`: little-endian).
    pub fn packet(&self) -> [u8; INIT_LEN] {
        assert_ne!(self.tag, 0, "an INIT's initiate tag must not be 0");
        let mut p = [0u8; INIT_LEN];
        p[0..2].copy_from_slice(&self.src_port.to_be_bytes());
        p[2..4].copy_from_slice(&self.dst_port.to_be_bytes());
        // p[4..8]: verification tag 0; p[8..12]: checksum, filled last.
        p[12] = CHUNK_INIT;
        p[13] = 0; // flags
        p[14..16].copy_from_slice(&20u16.to_be_bytes()); // chunk length
        p[16..20].copy_from_slice(&self.tag.to_be_bytes()); // initiate tag
        p[20..24].copy_from_slice(&65535u32.to_be_bytes()); // a_rwnd
        p[24..26].copy_from_slice(&1u16.to_be_bytes()); // outbound streams
        p[26..28].copy_from_slice(&1u16.to_be_bytes()); // inbound streams
        p[28..32].copy_from_slice(&self.tag.to_be_bytes()); // initial TSN
        let crc = crc32c(&p);
        p[8..12].copy_from_slice(&crc.to_le_bytes());
        p
    }

    /// The INIT at the start of `sctp` (an SCTP packet, from its common header), if it is
    /// one with a valid checksum.
    pub fn parse(sctp: &[u8]) -> Option<Init> {
        if sctp.len() < INIT_LEN || sctp[12] != CHUNK_INIT {
            return None;
        }
        let mut copy = sctp.to_vec();
        copy[8..12].fill(0);
        let crc = u32::from_le_bytes(sctp[8..12].try_into().ok()?);
        if crc32c(&copy) != crc {
            return None;
        }
        Some(Init {
            src_port: u16::from_be_bytes([sctp[0], sctp[1]]),
            dst_port: u16::from_be_bytes([sctp[2], sctp[3]]),
            tag: u32::from_be_bytes(sctp[16..20].try_into().ok()?),
        })
    }
}

/// What a raw SCTP socket of `family` received: the sender and the INIT. An IPv4 raw
/// socket hands over the IP header too (skipped by its IHL; the source is taken from it),
/// an IPv6 one the payload only (the source is `from`, what `recvfrom` said).
pub fn received(buf: &[u8], v6: bool, from: Option<IpAddr>) -> Option<(IpAddr, Init)> {
    if v6 {
        return Some((from?, Init::parse(buf)?));
    }
    let ihl = usize::from(*buf.first()? & 0x0f) * 4;
    if buf.len() < ihl || ihl < 20 || buf[9] != PROTOCOL {
        return None;
    }
    let src = Ipv4Addr::new(buf[12], buf[13], buf[14], buf[15]);
    Some((IpAddr::V4(src), Init::parse(&buf[ihl..])?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc32c_check_value() {
        // The standard check value of CRC-32C (RFC 3720 §B.4 lists the same polynomial).
        assert_eq!(crc32c(b"123456789"), 0xE306_9283);
    }

    #[test]
    fn init_round_trips_and_rejects_a_bad_checksum() {
        let init = Init {
            src_port: 40000,
            dst_port: 3868,
            tag: 0x1234_5678,
        };
        let mut p = init.packet();
        assert_eq!(Init::parse(&p), Some(init));
        p[9] ^= 1;
        assert_eq!(Init::parse(&p), None);
    }
}
