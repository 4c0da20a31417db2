//! The `ipset` tool as an oracle: netfence's listings rendered the way `ipset list` and
//! `ipset save` print them, and the tool's own view of a set.

use std::collections::BTreeSet;

use netfilter::ipset::{Ipset, Member, SetHeader, SetListing};

use super::Sandbox;

/// Opens netfence's ipset handle in the sandbox.
pub fn open(sb: &Sandbox) -> Ipset {
    Ipset::open(&sb.netns()).expect("opening ipset in the sandbox")
}

/// `ipset list` text for a netfence listing, members sorted.
pub fn render_list(l: &SetListing) -> String {
    let h = &l.header;
    let mut members: Vec<String> = l.members.iter().map(ToString::to_string).collect();
    members.sort();
    format!(
        "Name: {}\nType: {}\nRevision: {}\nHeader: {}\nSize in memory: {}\nReferences: {}\n\
         Number of entries: {}\nMembers:\n{}",
        h.name,
        h.type_name,
        h.revision,
        header_params(h),
        h.memsize,
        h.references,
        h.entries,
        members.iter().map(|m| format!("{m}\n")).collect::<String>()
    )
}

pub fn header_params(h: &SetHeader) -> String {
    format!(
        "family {} hashsize {} maxelem {} bucketsize {} initval 0x{:08x}",
        h.family.expect("inet or inet6").ipset_name(),
        h.hashsize.expect("hash type"),
        h.maxelem.expect("hash type"),
        h.bucketsize.expect("revision with bucketsize"),
        h.initval.expect("revision with initval"),
    )
}

/// `ipset list` output with each set's members sorted (the kernel lists in hash order).
pub fn normalize_list(text: &str) -> Vec<String> {
    text.split("\n\n")
        .filter(|b| !b.trim().is_empty())
        .map(|block| {
            let (head, members) = block.split_once("Members:\n").unwrap_or((block, ""));
            let mut m: Vec<&str> = members.lines().filter(|l| !l.is_empty()).collect();
            m.sort();
            format!(
                "{head}Members:\n{}",
                m.iter().map(|l| format!("{l}\n")).collect::<String>()
            )
        })
        .collect()
}

/// `ipset save` lines for a netfence listing.
pub fn render_save(l: &SetListing) -> Vec<String> {
    let h = &l.header;
    let mut out = vec![format!(
        "create {} {} {}",
        h.name,
        h.type_name,
        header_params(h)
    )];
    out.extend(l.members.iter().map(|m| format!("add {} {m}", h.name)));
    out
}

pub fn sorted_lines(text: &str) -> Vec<String> {
    let mut v: Vec<String> = text
        .lines()
        .filter(|l| !l.is_empty())
        .map(String::from)
        .collect();
    v.sort();
    v
}

pub fn entries(sb: &Sandbox, set: &str) -> u32 {
    let out = sb.sh("ipset", &["list", "-t", set]);
    out.lines()
        .find_map(|l| l.strip_prefix("Number of entries: "))
        .expect("entries line")
        .parse()
        .unwrap()
}

pub fn members_by_tool(sb: &Sandbox, set: &str) -> BTreeSet<String> {
    sb.sh("ipset", &["save", set])
        .lines()
        .filter_map(|l| l.strip_prefix(&format!("add {set} ")).map(String::from))
        .collect()
}

pub fn display_set(ms: &[Member]) -> BTreeSet<String> {
    ms.iter().map(ToString::to_string).collect()
}
