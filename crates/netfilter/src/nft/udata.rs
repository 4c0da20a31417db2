//! Rule userdata (`NFTA_RULE_USERDATA`): type-length-value records the kernel stores for
//! userspace and never reads. `nft` keeps a rule's `comment "..."` there as record type 0
//! (`NFTNL_UDATA_RULE_COMMENT`, libnftnl's `udata.h`): one byte of type, one of length,
//! then the text and its NUL. `iptables-nft-save` decodes that record as `-m comment`.
//!
//! netfence writes exactly one comment record and reads back only userdata that is
//! exactly that: anything else belongs to another writer.

/// Record type of a rule comment.
const COMMENT: u8 = 0;

/// Longest comment text in userdata: the kernel takes at most 256 bytes of it
/// (`NFT_USERDATA_MAXLEN`), of which the record's header takes two and the NUL one.
pub const MAX_COMMENT_LEN: usize = 253;

/// The userdata holding `text` as the rule's comment. The caller checked that it has no
/// NUL and at most [`MAX_COMMENT_LEN`] bytes.
pub fn comment(text: &str) -> Vec<u8> {
    debug_assert!(text.len() <= MAX_COMMENT_LEN && !text.contains('\0'));
    let mut out = Vec::with_capacity(text.len() + 3);
    out.push(COMMENT);
    out.push((text.len() + 1) as u8);
    out.extend_from_slice(text.as_bytes());
    out.push(0);
    out
}

/// The comment, when `data` is exactly one well-formed comment record (what [`comment`]
/// writes); `None` for any other userdata.
pub fn parse_comment(data: &[u8]) -> Option<String> {
    let [COMMENT, len, rest @ ..] = data else {
        return None;
    };
    let (&nul, text) = rest.split_last()?;
    if nul != 0 || rest.len() != usize::from(*len) || text.contains(&0) {
        return None;
    }
    String::from_utf8(text.to_vec()).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn comment_is_the_record_nft_writes() {
        // `nft --debug=netlink` of `comment "nf:abc"`: userdata = { \x00\x07nf:abc\x00 }.
        assert_eq!(comment("nf:abc"), b"\x00\x07nf:abc\x00");
        assert_eq!(
            parse_comment(b"\x00\x07nf:abc\x00").as_deref(),
            Some("nf:abc")
        );
    }

    #[test]
    fn longest_comment_fills_the_kernel_limit() {
        let text = "x".repeat(MAX_COMMENT_LEN);
        let data = comment(&text);
        assert_eq!(data.len(), 256);
        assert_eq!(parse_comment(&data), Some(text));
    }

    #[test]
    fn anything_but_one_comment_record_is_not_read() {
        for data in [
            &b""[..],
            b"\x00",
            b"\x00\x00",
            // No NUL, a NUL inside, a length that disagrees.
            b"\x00\x02ab",
            b"\x00\x03a\x00b",
            b"\x00\x05ab\x00",
            // Another record type (ebtables' policy), a second record after the comment.
            b"\x01\x04\x00\x00\x00\x00",
            b"\x00\x02a\x00\x01\x01\x00",
            // Not UTF-8.
            b"\x00\x02\xff\x00",
        ] {
            assert_eq!(parse_comment(data), None, "{data:?}");
        }
    }
}
