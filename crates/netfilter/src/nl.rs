//! Netlink framing: a message and attribute writer, and a bounds-checked reader.
//!
//! Wire format per `linux/netlink.h`: a 16-byte `nlmsghdr`, then a family header, then
//! attributes, each a 4-byte `nlattr` (length, type) and its payload padded to 4 bytes.
//! Everything here is pure: writers fill a `Vec<u8>`, readers borrow a slice and never
//! index past it, whatever the kernel (or a fuzzer) hands them.

use crate::error::Error;

/// `NLMSG_ALIGNTO` and `NLA_ALIGNTO` (`linux/netlink.h`).
const ALIGN: usize = 4;
/// `sizeof(struct nlmsghdr)`.
pub const NLMSG_HDRLEN: usize = 16;
/// `sizeof(struct nlattr)`.
const NLA_HDRLEN: usize = 4;
/// `NLA_F_NESTED` (`linux/netlink.h`): set on nests by ipset, tolerated by nf_tables.
pub const NLA_F_NESTED: u16 = 1 << 15;
/// `NLA_F_NET_BYTEORDER` (`linux/netlink.h`): ipset marks big-endian integers with it.
pub const NLA_F_NET_BYTEORDER: u16 = 1 << 14;
/// The type bits of `nla_type`, without the flags above (`NLA_TYPE_MASK`).
pub(crate) const NLA_TYPE_MASK: u16 = !(NLA_F_NESTED | NLA_F_NET_BYTEORDER);

/// `NLMSG_ERROR` (`linux/netlink.h`): an error or, with errno 0, an ACK.
pub const NLMSG_ERROR: u16 = 2;
/// `NLMSG_DONE` (`linux/netlink.h`): the end of a multipart dump.
pub const NLMSG_DONE: u16 = 3;
/// `NLM_F_REQUEST`.
pub const NLM_F_REQUEST: u16 = 0x1;
/// `NLM_F_MULTI`.
pub const NLM_F_MULTI: u16 = 0x2;
/// `NLM_F_ACK`.
pub const NLM_F_ACK: u16 = 0x4;

/// Sets or clears `NLM_F_ACK` in the `nlmsghdr` at the start of `msg` (`nlmsg_flags` is
/// the `u16` at offset 6, in host order). A buffer too short for a header is left alone.
pub fn set_ack(msg: &mut [u8], ack: bool) {
    let Some(f) = msg.get_mut(6..8) else { return };
    let flags = u16::from_ne_bytes([f[0], f[1]]);
    let flags = if ack {
        flags | NLM_F_ACK
    } else {
        flags & !NLM_F_ACK
    };
    f.copy_from_slice(&flags.to_ne_bytes());
}
/// `NLM_F_ECHO`.
pub const NLM_F_ECHO: u16 = 0x8;
/// `NLM_F_DUMP` = `NLM_F_ROOT | NLM_F_MATCH`.
pub const NLM_F_DUMP: u16 = 0x300;
/// `NLM_F_REPLACE` (a NEW request).
pub const NLM_F_REPLACE: u16 = 0x100;
/// `NLM_F_EXCL` (a NEW request).
pub const NLM_F_EXCL: u16 = 0x200;
/// `NLM_F_CREATE` (a NEW request).
pub const NLM_F_CREATE: u16 = 0x400;
/// `NLM_F_APPEND` (a NEW request).
pub const NLM_F_APPEND: u16 = 0x800;

/// Rounds `len` up to the netlink alignment.
pub const fn align(len: usize) -> usize {
    (len + ALIGN - 1) & !(ALIGN - 1)
}

/// Writes a sequence of netlink messages into one contiguous buffer, ready for one
/// `sendmsg`. nf_tables commits a batch only when begin through end arrive in one send.
#[derive(Debug, Default, Clone)]
pub struct MsgWriter {
    buf: Vec<u8>,
    /// Offset of the header of the message being written, if one is open.
    open: Option<usize>,
}

/// A nest opened by [`MsgWriter::nest_begin`], to be closed by [`MsgWriter::nest_end`].
#[must_use = "a nest must be closed with nest_end"]
#[derive(Debug)]
pub struct Nest(usize);

impl MsgWriter {
    /// An empty writer.
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty writer with room for `bytes` without reallocating.
    pub fn with_capacity(bytes: usize) -> Self {
        Self {
            buf: Vec::with_capacity(bytes),
            open: None,
        }
    }

    /// Opens a message with an `nlmsghdr`; its length is filled in by [`Self::end`].
    pub fn begin(&mut self, ty: u16, flags: u16, seq: u32) {
        debug_assert!(self.open.is_none(), "previous message not ended");
        let start = self.buf.len();
        self.open = Some(start);
        self.buf.extend_from_slice(&0u32.to_ne_bytes());
        self.buf.extend_from_slice(&ty.to_ne_bytes());
        self.buf.extend_from_slice(&flags.to_ne_bytes());
        self.buf.extend_from_slice(&seq.to_ne_bytes());
        // Port id 0: the kernel fills in the sender.
        self.buf.extend_from_slice(&0u32.to_ne_bytes());
    }

    /// Appends the `nfgenmsg` family header (`linux/netfilter/nfnetlink.h`); `res_id` is
    /// carried big-endian, as the kernel reads it.
    pub fn nfgenmsg(&mut self, family: u8, version: u8, res_id: u16) {
        self.buf.push(family);
        self.buf.push(version);
        self.buf.extend_from_slice(&res_id.to_be_bytes());
    }

    /// Appends raw bytes to the open message (a family header the kernel defines as a
    /// struct, or a payload libnftnl built).
    pub fn raw(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
        self.pad();
    }

    /// Appends an attribute.
    ///
    /// # Errors
    /// [`Error::Encode`] when the payload does not fit in the 16-bit `nla_len`.
    pub fn attr(&mut self, ty: u16, data: &[u8]) -> Result<(), Error> {
        let len = NLA_HDRLEN + data.len();
        let len16 = u16::try_from(len).map_err(|_| Error::Encode {
            what: format!(
                "attribute {ty} of {} bytes exceeds the 64 KiB netlink limit",
                len
            ),
        })?;
        self.buf.extend_from_slice(&len16.to_ne_bytes());
        self.buf.extend_from_slice(&ty.to_ne_bytes());
        self.buf.extend_from_slice(data);
        self.pad();
        Ok(())
    }

    /// Appends a NUL-terminated string attribute.
    ///
    /// # Errors
    /// As [`Self::attr`].
    pub fn attr_strz(&mut self, ty: u16, s: &str) -> Result<(), Error> {
        let mut v = Vec::with_capacity(s.len() + 1);
        v.extend_from_slice(s.as_bytes());
        v.push(0);
        self.attr(ty, &v)
    }

    /// Appends a `u8` attribute.
    pub fn attr_u8(&mut self, ty: u16, v: u8) {
        self.attr(ty, &[v]).expect("1 byte fits");
    }

    /// Appends a big-endian `u16` attribute.
    pub fn attr_u16_be(&mut self, ty: u16, v: u16) {
        self.attr(ty, &v.to_be_bytes()).expect("2 bytes fit");
    }

    /// Appends a big-endian `u32` attribute.
    pub fn attr_u32_be(&mut self, ty: u16, v: u32) {
        self.attr(ty, &v.to_be_bytes()).expect("4 bytes fit");
    }

    /// Opens a nested attribute; `ty` should carry [`NLA_F_NESTED`] where the subsystem
    /// expects it (ipset does).
    pub fn nest_begin(&mut self, ty: u16) -> Nest {
        let start = self.buf.len();
        self.buf.extend_from_slice(&0u16.to_ne_bytes());
        self.buf.extend_from_slice(&ty.to_ne_bytes());
        Nest(start)
    }

    /// Closes a nest, writing its length.
    ///
    /// # Errors
    /// [`Error::Encode`] when the nest grew past 64 KiB; the caller must split its payload.
    pub fn nest_end(&mut self, nest: Nest) -> Result<(), Error> {
        let len = self.buf.len() - nest.0;
        let len16 = u16::try_from(len).map_err(|_| Error::Encode {
            what: format!("nested attribute of {len} bytes exceeds the 64 KiB netlink limit"),
        })?;
        self.buf[nest.0..nest.0 + 2].copy_from_slice(&len16.to_ne_bytes());
        Ok(())
    }

    /// Closes the open message, writing its length.
    pub fn end(&mut self) {
        let start = self.open.take().expect("end() without begin()");
        let len = (self.buf.len() - start) as u32;
        self.buf[start..start + 4].copy_from_slice(&len.to_ne_bytes());
    }

    /// Bytes written so far.
    pub fn len(&self) -> usize {
        self.buf.len()
    }

    /// Whether nothing was written.
    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    /// The bytes written.
    pub fn as_bytes(&self) -> &[u8] {
        &self.buf
    }

    /// The buffer, consuming the writer.
    pub fn into_bytes(self) -> Vec<u8> {
        self.buf
    }

    fn pad(&mut self) {
        let padded = align(self.buf.len());
        self.buf.resize(padded, 0);
    }
}

/// One netlink message, borrowed from a receive buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Msg<'a> {
    /// `nlmsg_type`.
    pub ty: u16,
    /// `nlmsg_flags`.
    pub flags: u16,
    /// `nlmsg_seq`.
    pub seq: u32,
    /// Everything after the `nlmsghdr`.
    pub payload: &'a [u8],
    /// The whole message, header included.
    pub bytes: &'a [u8],
}

/// Iterates over the messages in a buffer, stopping with an error at the first one whose
/// length does not fit.
pub fn messages(buf: &[u8]) -> Messages<'_> {
    Messages { buf }
}

/// Iterator returned by [`messages`].
#[derive(Debug, Clone)]
pub struct Messages<'a> {
    buf: &'a [u8],
}

impl<'a> Iterator for Messages<'a> {
    type Item = Result<Msg<'a>, Error>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.buf.is_empty() {
            return None;
        }
        if self.buf.len() < NLMSG_HDRLEN {
            self.buf = &[];
            return Some(Err(Error::malformed("truncated nlmsghdr")));
        }
        let len = u32::from_ne_bytes(self.buf[0..4].try_into().expect("4 bytes")) as usize;
        if len < NLMSG_HDRLEN || len > self.buf.len() {
            self.buf = &[];
            return Some(Err(Error::malformed(format!(
                "nlmsg_len {len} outside 16..={}",
                self.buf.len()
            ))));
        }
        let bytes = &self.buf[..len];
        let msg = Msg {
            ty: u16::from_ne_bytes([bytes[4], bytes[5]]),
            flags: u16::from_ne_bytes([bytes[6], bytes[7]]),
            seq: u32::from_ne_bytes(bytes[8..12].try_into().expect("4 bytes")),
            payload: &bytes[NLMSG_HDRLEN..],
            bytes,
        };
        self.buf = &self.buf[align(len).min(self.buf.len())..];
        Some(Ok(msg))
    }
}

impl<'a> Msg<'a> {
    /// For an `NLMSG_ERROR`: the (positive) errno, 0 for an ACK, and the sequence number
    /// of the request it answers.
    ///
    /// # Errors
    /// [`Error::Malformed`] when the payload is too short.
    pub fn error(&self) -> Result<(i32, u32), Error> {
        // struct nlmsgerr { int error; struct nlmsghdr msg; }
        if self.payload.len() < 4 + NLMSG_HDRLEN {
            return Err(Error::malformed("truncated nlmsgerr"));
        }
        let err = i32::from_ne_bytes(self.payload[0..4].try_into().expect("4 bytes"));
        let seq = u32::from_ne_bytes(self.payload[12..16].try_into().expect("4 bytes"));
        Ok((err.saturating_neg(), seq))
    }

    /// The attributes after a family header of `hdr` bytes (4 for `nfgenmsg`).
    pub fn attrs(&self, hdr: usize) -> Attrs<'a> {
        Attrs {
            buf: self.payload.get(hdr..).unwrap_or(&[]),
        }
    }

    /// The `nfgenmsg` family byte, if present.
    pub fn nfgen_family(&self) -> Option<u8> {
        self.payload.first().copied()
    }
}

/// One attribute: its type (flags stripped), whether it was marked nested, and payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Attr<'a> {
    /// Attribute type, without `NLA_F_NESTED` / `NLA_F_NET_BYTEORDER`.
    pub ty: u16,
    /// The payload, without padding.
    pub data: &'a [u8],
}

/// Iterates over attributes, bounds-checked.
#[derive(Debug, Clone)]
pub struct Attrs<'a> {
    buf: &'a [u8],
}

/// Attributes in `buf`.
pub fn attrs(buf: &[u8]) -> Attrs<'_> {
    Attrs { buf }
}

impl<'a> Iterator for Attrs<'a> {
    type Item = Result<Attr<'a>, Error>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.buf.len() < NLA_HDRLEN {
            // Trailing padding shorter than a header is legal; anything else is not.
            let rest = std::mem::take(&mut self.buf);
            return if rest.iter().all(|&b| b == 0) {
                None
            } else {
                Some(Err(Error::malformed("truncated nlattr")))
            };
        }
        let len = u16::from_ne_bytes([self.buf[0], self.buf[1]]) as usize;
        let ty = u16::from_ne_bytes([self.buf[2], self.buf[3]]) & NLA_TYPE_MASK;
        if len < NLA_HDRLEN || len > self.buf.len() {
            self.buf = &[];
            return Some(Err(Error::malformed(format!(
                "nla_len {len} out of bounds"
            ))));
        }
        let data = &self.buf[NLA_HDRLEN..len];
        self.buf = &self.buf[align(len).min(self.buf.len())..];
        Some(Ok(Attr { ty, data }))
    }
}

impl<'a> Attr<'a> {
    /// The nested attributes inside this one.
    pub fn nested(&self) -> Attrs<'a> {
        Attrs { buf: self.data }
    }

    /// The payload as a `u8`.
    ///
    /// # Errors
    /// [`Error::Malformed`] when the length is wrong.
    pub fn u8(&self) -> Result<u8, Error> {
        self.fixed::<1>().map(|b| b[0])
    }

    /// The payload as a big-endian `u16`.
    ///
    /// # Errors
    /// [`Error::Malformed`] when the length is wrong.
    pub fn u16_be(&self) -> Result<u16, Error> {
        self.fixed::<2>().map(u16::from_be_bytes)
    }

    /// The payload as a big-endian `u32`.
    ///
    /// # Errors
    /// [`Error::Malformed`] when the length is wrong.
    pub fn u32_be(&self) -> Result<u32, Error> {
        self.fixed::<4>().map(u32::from_be_bytes)
    }

    /// The payload as a big-endian `u64`.
    ///
    /// # Errors
    /// [`Error::Malformed`] when the length is wrong.
    pub fn u64_be(&self) -> Result<u64, Error> {
        self.fixed::<8>().map(u64::from_be_bytes)
    }

    /// The payload as a string, up to the first NUL.
    ///
    /// # Errors
    /// [`Error::Malformed`] when it is not UTF-8.
    pub fn str(&self) -> Result<&'a str, Error> {
        let end = self
            .data
            .iter()
            .position(|&b| b == 0)
            .unwrap_or(self.data.len());
        std::str::from_utf8(&self.data[..end])
            .map_err(|_| Error::malformed(format!("attribute {} is not UTF-8", self.ty)))
    }

    fn fixed<const N: usize>(&self) -> Result<[u8; N], Error> {
        self.data.try_into().map_err(|_| {
            Error::malformed(format!(
                "attribute {} has {} bytes, expected {N}",
                self.ty,
                self.data.len()
            ))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_ack_flips_only_the_ack_bit_of_the_header() {
        let mut w = MsgWriter::new();
        w.begin(0x0609, NLM_F_REQUEST | NLM_F_ACK | NLM_F_EXCL, 9);
        w.end();
        let mut b = w.into_bytes();
        let before = b.clone();
        set_ack(&mut b, false);
        let flags = |b: &[u8]| u16::from_ne_bytes([b[6], b[7]]);
        assert_eq!(flags(&b), NLM_F_REQUEST | NLM_F_EXCL);
        assert_eq!((&b[..6], &b[8..]), (&before[..6], &before[8..]));
        set_ack(&mut b, true);
        assert_eq!(b, before);
        // Too short for a header: left alone.
        let mut short = [0u8; 5];
        set_ack(&mut short, true);
        assert_eq!(short, [0; 5]);
    }

    #[test]
    fn writer_bytes() {
        let mut w = MsgWriter::new();
        w.begin(0x0a01, NLM_F_REQUEST | NLM_F_ACK, 7);
        w.nfgenmsg(2, 0, 0x0a);
        w.attr_strz(1, "filter").unwrap();
        let n = w.nest_begin(2 | NLA_F_NESTED);
        w.attr_u32_be(1, 0x0102_0304);
        w.nest_end(n).unwrap();
        w.end();
        let want: Vec<u8> = [
            &44u32.to_ne_bytes()[..],
            &0x0a01u16.to_ne_bytes(),
            &5u16.to_ne_bytes(),
            &7u32.to_ne_bytes(),
            &0u32.to_ne_bytes(),
            &[2, 0, 0, 0x0a],
            &11u16.to_ne_bytes(),
            &1u16.to_ne_bytes(),
            b"filter\0\0",
            &12u16.to_ne_bytes(),
            &(2u16 | NLA_F_NESTED).to_ne_bytes(),
            &8u16.to_ne_bytes(),
            &1u16.to_ne_bytes(),
            &[1, 2, 3, 4],
        ]
        .concat();
        assert_eq!(w.as_bytes(), &want[..]);
    }

    #[test]
    fn reader_roundtrip() {
        let mut w = MsgWriter::new();
        w.begin(5, 0, 1);
        w.nfgenmsg(0, 0, 0);
        w.attr_strz(3, "abc").unwrap();
        w.attr_u32_be(4, 9);
        w.end();
        let msgs: Vec<_> = messages(w.as_bytes()).collect::<Result<_, _>>().unwrap();
        assert_eq!(msgs.len(), 1);
        let attrs: Vec<_> = msgs[0].attrs(4).collect::<Result<_, _>>().unwrap();
        assert_eq!(attrs[0].str().unwrap(), "abc");
        assert_eq!(attrs[1].u32_be().unwrap(), 9);
    }

    #[test]
    fn oversized_attr_is_an_error_not_a_panic() {
        let mut w = MsgWriter::new();
        w.begin(1, 0, 0);
        assert!(w.attr(1, &vec![0u8; 70_000]).is_err());
    }

    proptest::proptest! {
        /// No input makes the readers panic or loop.
        #[test]
        fn readers_never_panic(buf in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..256)) {
            for m in messages(&buf).take(64).flatten() {
                {
                    let _ = m.error();
                    for a in m.attrs(4).take(64).flatten() {
                        let _ = (a.u8(), a.u16_be(), a.u32_be(), a.u64_be(), a.str());
                        for n in a.nested().take(64).flatten() { let _ = n.str(); }
                    }
                }
            }
            for a in attrs(&buf).take(64).flatten() { let _ = a.str(); }
        }
    }
}
