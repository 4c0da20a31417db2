//! nf_tables expressions as they appear on the wire (`linux/netfilter/nf_tables.h`), and
//! their decoding from a dumped rule. Pure and bounds-checked: a malformed attribute
//! yields an error, never a panic.

use crate::error::Error;
use crate::nl::{self, Attr};

// Attribute numbers, from `linux/netfilter/nf_tables.h` (mirrored by ipset-sys).
const NFTA_LIST_ELEM: u16 = 1;
const NFTA_EXPR_NAME: u16 = 1;
const NFTA_EXPR_DATA: u16 = 2;

/// `enum nft_registers`: the verdict register and the first 16-byte data register.
pub const NFT_REG_VERDICT: u32 = 0;
/// `NFT_REG_1`.
pub const NFT_REG_1: u32 = 1;

/// `enum nft_payload_bases`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PayloadBase {
    /// `NFT_PAYLOAD_LL_HEADER`.
    Link = 0,
    /// `NFT_PAYLOAD_NETWORK_HEADER`.
    Network = 1,
    /// `NFT_PAYLOAD_TRANSPORT_HEADER`.
    Transport = 2,
}

/// `enum nft_meta_keys` values netfence uses.
pub mod meta_key {
    /// `NFT_META_MARK`.
    pub const MARK: u32 = 3;
    /// `NFT_META_IIFNAME`.
    pub const IIFNAME: u32 = 6;
    /// `NFT_META_OIFNAME`.
    pub const OIFNAME: u32 = 7;
    /// `NFT_META_L4PROTO`.
    pub const L4PROTO: u32 = 16;
}

/// `enum nft_cmp_ops`.
pub mod cmp_op {
    /// `NFT_CMP_EQ`.
    pub const EQ: u32 = 0;
    /// `NFT_CMP_NEQ`.
    pub const NEQ: u32 = 1;
}

/// `enum nft_range_ops`.
pub mod range_op {
    /// `NFT_RANGE_EQ`.
    pub const EQ: u32 = 0;
    /// `NFT_RANGE_NEQ`.
    pub const NEQ: u32 = 1;
}

/// Verdict codes (`linux/netfilter.h`, `nf_tables.h`): `NF_DROP`, `NF_ACCEPT`, and the
/// negative nf_tables codes.
pub mod verdict {
    /// `NF_DROP`.
    pub const DROP: i32 = 0;
    /// `NF_ACCEPT`.
    pub const ACCEPT: i32 = 1;
    /// `NFT_JUMP`.
    pub const JUMP: i32 = -3;
    /// `NFT_GOTO`.
    pub const GOTO: i32 = -4;
    /// `NFT_RETURN`.
    pub const RETURN: i32 = -5;
}

/// One decoded expression.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expr {
    /// `meta load KEY => reg`.
    Meta {
        /// `NFT_META_*`.
        key: u32,
        /// Destination register.
        dreg: u32,
    },
    /// `payload load LEN @ BASE + OFFSET => reg`.
    Payload {
        /// `NFT_PAYLOAD_*_HEADER`.
        base: u32,
        /// Byte offset.
        offset: u32,
        /// Byte length.
        len: u32,
        /// Destination register.
        dreg: u32,
    },
    /// `bitwise reg = (reg & mask) ^ xor`.
    Bitwise {
        /// Source register.
        sreg: u32,
        /// Destination register.
        dreg: u32,
        /// Mask bytes.
        mask: Vec<u8>,
        /// Xor bytes.
        xor: Vec<u8>,
    },
    /// `cmp OP reg DATA`.
    Cmp {
        /// Source register.
        sreg: u32,
        /// `NFT_CMP_*`.
        op: u32,
        /// Compared bytes.
        data: Vec<u8>,
    },
    /// `range OP reg FROM TO`.
    Range {
        /// Source register.
        sreg: u32,
        /// `NFT_RANGE_*`.
        op: u32,
        /// Lower bound bytes.
        from: Vec<u8>,
        /// Upper bound bytes.
        to: Vec<u8>,
    },
    /// `counter`.
    Counter {
        /// Packets.
        packets: u64,
        /// Bytes.
        bytes: u64,
    },
    /// `immediate reg 0 VERDICT [CHAIN]`.
    Verdict {
        /// Verdict code.
        code: i32,
        /// Chain, for jump and goto.
        chain: Option<String>,
    },
    /// An xtables match.
    Match {
        /// Extension name.
        name: String,
        /// Revision.
        rev: u32,
        /// Info blob.
        info: Vec<u8>,
    },
    /// An xtables target.
    Target {
        /// Extension name.
        name: String,
        /// Revision.
        rev: u32,
        /// Info blob.
        info: Vec<u8>,
    },
    /// `log`.
    Log {
        /// `NFTA_LOG_GROUP`.
        group: Option<u16>,
        /// `NFTA_LOG_PREFIX`.
        prefix: Option<String>,
        /// `NFTA_LOG_SNAPLEN`.
        snaplen: Option<u32>,
        /// `NFTA_LOG_QTHRESHOLD`.
        qthreshold: Option<u16>,
        /// `NFTA_LOG_LEVEL`.
        level: Option<u32>,
        /// `NFTA_LOG_FLAGS`.
        flags: Option<u32>,
    },
    /// Anything else: kept by name so the rule is recognisably foreign.
    Other(String),
}

/// `NFTA_DATA_VALUE` / `NFTA_DATA_VERDICT` inside an `nft_data` nest.
fn data_value(a: &Attr<'_>) -> Result<Vec<u8>, Error> {
    for d in a.nested() {
        let d = d?;
        if d.ty == 1 {
            return Ok(d.data.to_vec());
        }
    }
    Err(Error::malformed("nft_data without NFTA_DATA_VALUE"))
}

/// Decodes the payload of `NFTA_RULE_EXPRESSIONS`.
///
/// # Errors
/// [`Error::Malformed`] on a truncated or inconsistent attribute.
pub fn decode_exprs(list: &[u8]) -> Result<Vec<Expr>, Error> {
    let mut out = Vec::new();
    for elem in nl::attrs(list) {
        let elem = elem?;
        if elem.ty != NFTA_LIST_ELEM {
            continue;
        }
        let mut name = None;
        let mut data = None;
        for a in elem.nested() {
            let a = a?;
            match a.ty {
                NFTA_EXPR_NAME => name = Some(a.str()?),
                NFTA_EXPR_DATA => data = Some(a),
                _ => {}
            }
        }
        let name = name.ok_or_else(|| Error::malformed("expression without a name"))?;
        let attrs: Vec<Attr<'_>> = match data {
            Some(d) => d.nested().collect::<Result<_, _>>()?,
            None => Vec::new(),
        };
        out.push(decode_one(name, &attrs)?);
    }
    Ok(out)
}

fn decode_one(name: &str, attrs: &[Attr<'_>]) -> Result<Expr, Error> {
    let get = |ty: u16| attrs.iter().find(|a| a.ty == ty);
    let u32_of = |ty: u16| get(ty).map(|a| a.u32_be()).transpose();
    let need = |ty: u16| -> Result<u32, Error> {
        u32_of(ty)?
            .ok_or_else(|| Error::malformed(format!("{name} expression lacks attribute {ty}")))
    };
    Ok(match name {
        // NFTA_META_DREG 1, NFTA_META_KEY 2
        "meta" if get(1).is_some() => Expr::Meta {
            dreg: need(1)?,
            key: need(2)?,
        },
        // NFTA_PAYLOAD_DREG 1, BASE 2, OFFSET 3, LEN 4
        "payload" if get(1).is_some() => Expr::Payload {
            dreg: need(1)?,
            base: need(2)?,
            offset: need(3)?,
            len: need(4)?,
        },
        // NFTA_BITWISE_SREG 1, DREG 2, LEN 3, MASK 4, XOR 5 (OP 6 absent = boolean)
        "bitwise" if get(6).is_none_or(|a| a.u32_be().ok() == Some(0)) => Expr::Bitwise {
            sreg: need(1)?,
            dreg: need(2)?,
            mask: data_value(get(4).ok_or_else(|| Error::malformed("bitwise without mask"))?)?,
            xor: data_value(get(5).ok_or_else(|| Error::malformed("bitwise without xor"))?)?,
        },
        // NFTA_CMP_SREG 1, OP 2, DATA 3
        "cmp" => Expr::Cmp {
            sreg: need(1)?,
            op: need(2)?,
            data: data_value(get(3).ok_or_else(|| Error::malformed("cmp without data"))?)?,
        },
        // NFTA_RANGE_SREG 1, OP 2, FROM_DATA 3, TO_DATA 4
        "range" => Expr::Range {
            sreg: need(1)?,
            op: need(2)?,
            from: data_value(get(3).ok_or_else(|| Error::malformed("range without from"))?)?,
            to: data_value(get(4).ok_or_else(|| Error::malformed("range without to"))?)?,
        },
        // NFTA_COUNTER_BYTES 1, PACKETS 2
        "counter" => Expr::Counter {
            bytes: get(1).map(|a| a.u64_be()).transpose()?.unwrap_or(0),
            packets: get(2).map(|a| a.u64_be()).transpose()?.unwrap_or(0),
        },
        // NFTA_IMMEDIATE_DREG 1, DATA 2 -> NFTA_DATA_VERDICT 2 -> CODE 1, CHAIN 2
        "immediate" if u32_of(1)? == Some(NFT_REG_VERDICT) => {
            let data = get(2).ok_or_else(|| Error::malformed("immediate without data"))?;
            let mut code = None;
            let mut chain = None;
            for d in data.nested() {
                let d = d?;
                if d.ty == 2 {
                    for v in d.nested() {
                        let v = v?;
                        match v.ty {
                            1 => code = Some(v.u32_be()? as i32),
                            2 => chain = Some(v.str()?.to_owned()),
                            _ => {}
                        }
                    }
                }
            }
            Expr::Verdict {
                code: code.ok_or_else(|| Error::malformed("verdict without code"))?,
                chain,
            }
        }
        // NFTA_MATCH_NAME 1, REV 2, INFO 3 (same numbering for targets)
        "match" | "target" => {
            let n = get(1)
                .ok_or_else(|| Error::malformed("xt expression without name"))?
                .str()?
                .to_owned();
            let rev = need(2)?;
            let info = get(3).map(|a| a.data.to_vec()).unwrap_or_default();
            if name == "match" {
                Expr::Match { name: n, rev, info }
            } else {
                Expr::Target { name: n, rev, info }
            }
        }
        // NFTA_LOG_GROUP 1 (u16), PREFIX 2, SNAPLEN 3, QTHRESHOLD 4 (u16), LEVEL 5, FLAGS 6
        "log" => Expr::Log {
            group: get(1).map(|a| a.u16_be()).transpose()?,
            prefix: get(2).map(|a| a.str().map(str::to_owned)).transpose()?,
            snaplen: u32_of(3)?,
            qthreshold: get(4).map(|a| a.u16_be()).transpose()?,
            level: u32_of(5)?,
            flags: u32_of(6)?,
        },
        other => Expr::Other(other.to_owned()),
    })
}
