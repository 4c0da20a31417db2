//! The "Kernel bounds" section: what the kernel itself charges for the smallest messages
//! (`benches/ipset.rs` and `benches/nft.rs`, group `bound`, records in `bound.jsonl`),
//! the floor under every scenario's figures, and what finding an ipset by name costs per
//! set slot.

use std::fmt::Write as _;

use crate::report::{ns, thousands};
use crate::stats::{Data, Summary};

/// The element commands whose cost per slot is worked out: (scenario infix, name).
const COMMANDS: [(&str, &str); 2] = [("add", "ADD"), ("del", "DEL")];

/// The set slot a series measured: its `slot` figure, else the number after `_slot_` in
/// its scenario's name.
pub fn slot(s: &Summary) -> Option<usize> {
    s.get("slot").map(|v| v as usize).or_else(|| {
        let (_, n) = s.key.scenario.rsplit_once("_slot_")?;
        n.parse().ok()
    })
}

/// The element command (`add` or `del`) of an `ipset_<cmd>_slot_<n>` series.
fn command(s: &Summary) -> Option<&'static str> {
    COMMANDS
        .iter()
        .map(|(cmd, _)| *cmd)
        .find(|cmd| s.key.scenario.starts_with(&format!("ipset_{cmd}_slot_")))
}

/// What one series measures, in words.
fn describe(s: &Summary) -> String {
    let sets = s
        .get("sets")
        .map(|n| format!(" of {}", thousands(n as u64)))
        .unwrap_or_default();
    let scenario = s.key.scenario.as_str();
    if scenario == "ipset_protocol" {
        return "`IPSET_CMD_PROTOCOL`: no set looked up (answered by a reply, then the ACK)"
            .to_owned();
    }
    if let (Some(cmd), Some(slot)) = (command(s), slot(s)) {
        let (name, to) = if cmd == "add" {
            ("ADD", "to")
        } else {
            ("DEL", "from")
        };
        return format!(
            "one-element {name} {to} the `hash:ip` set in slot {}{sets}",
            thousands(slot as u64)
        );
    }
    if scenario.starts_with("nft_empty_batch") {
        let rules = s.get("rules").unwrap_or(0.0) as u64;
        let table = if rules == 0 {
            "`ip filter` table without rules".to_owned()
        } else {
            format!(
                "`ip filter` table of {} rules in {} chains",
                thousands(rules),
                thousands(s.get("chains").unwrap_or(0.0) as u64)
            )
        };
        return format!("empty nf_tables batch (`BATCH_BEGIN`, `BATCH_END`), {table}");
    }
    "see `benches/ipset.rs` and `benches/nft.rs`".to_owned()
}

/// Where a series goes in the table: the ipset round trip without a lookup, the element
/// commands by slot (ADD before DEL), the nf_tables batches by table size, then anything
/// else by name.
fn order(s: &Summary) -> (u8, usize, String) {
    let scenario = s.key.scenario.clone();
    if scenario == "ipset_protocol" {
        (0, 0, scenario)
    } else if command(s).is_some() {
        (1, slot(s).unwrap_or(usize::MAX), scenario)
    } else if scenario.starts_with("nft_") {
        (2, s.get("rules").unwrap_or(0.0) as usize, scenario)
    } else {
        (3, 0, scenario)
    }
}

/// One element command's cost per slot, from its medians at the lowest and the highest
/// slot measured (slot 0 and the last one, in the bench).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SlotCost {
    /// The lowest slot measured.
    pub first: usize,
    /// Its median, in ns.
    pub first_ns: f64,
    /// The highest slot measured.
    pub last: usize,
    /// Its median, in ns.
    pub last_ns: f64,
    /// Whether either figure comes from a smoke pass.
    pub smoke: bool,
}

impl SlotCost {
    /// The median's growth per slot, in ns: the cost of one more set before the target.
    pub fn ns_per_slot(&self) -> f64 {
        (self.last_ns - self.first_ns) / (self.last - self.first) as f64
    }
}

/// `cmd`'s (`add` or `del`) cost per slot, if two slots of it were measured.
pub fn slot_cost(d: &Data, cmd: &str) -> Option<SlotCost> {
    let points: Vec<(usize, f64, bool)> = d
        .bounds()
        .into_iter()
        .filter(|s| command(s) == Some(cmd))
        .filter_map(|s| Some((slot(s)?, s.median_ns? as f64, s.smoke)))
        .collect();
    let first = points.iter().min_by_key(|p| p.0)?;
    let last = points.iter().max_by_key(|p| p.0)?;
    (last.0 > first.0).then_some(SlotCost {
        first: first.0,
        first_ns: first.1,
        last: last.0,
        last_ns: last.1,
        smoke: first.2 || last.2,
    })
}

/// The section, heading included.
pub fn section(d: &Data) -> String {
    let mut o = String::new();
    let w = &mut o;
    // Writing to a String can't fail.
    let _ = writeln!(w, "## Kernel bounds\n");
    let _ = writeln!(
        w,
        "What the kernel charges for the smallest messages, with nothing of netfence's in \
         the way: one round trip each, from `sendmsg` to the ACK, on a bare netlink socket \
         (`cargo bench --bench ipset --bench nft -- bound`): the floor under every \
         control-plane figure of this report.\n"
    );
    let mut rows = d.bounds();
    if rows.is_empty() {
        let _ = writeln!(
            w,
            "Not measured: no records of bench `bound` (`bound.jsonl`)."
        );
        return o;
    }
    rows.sort_by_key(|s| order(s));
    let _ = writeln!(
        w,
        "| series | message | median | p99 | n |\n| --- | --- | ---: | ---: | ---: |"
    );
    let dash = || "—".to_owned();
    for s in &rows {
        let smoke = if s.smoke { " _smoke_" } else { "" };
        let _ = writeln!(
            w,
            "| `{}`{smoke} | {} | {} | {} | {} |",
            s.key.scenario,
            describe(s),
            s.median_ns.map(|v| ns(v as f64)).unwrap_or_else(dash),
            s.p99_ns.map(|v| ns(v as f64)).unwrap_or_else(dash),
            thousands(s.n as u64),
        );
    }

    let costs: Vec<(&str, SlotCost)> = COMMANDS
        .iter()
        .filter_map(|(cmd, name)| Some((*name, slot_cost(d, cmd)?)))
        .collect();
    let _ = writeln!(w);
    if costs.is_empty() {
        let _ = writeln!(
            w,
            "Cost per set slot: not measured (it needs one command's medians at two \
             slots)."
        );
        return o;
    }
    let _ = writeln!(
        w,
        "| command | first slot | its median | last slot | its median | per slot |\n\
         | --- | ---: | ---: | ---: | ---: | ---: |"
    );
    for (name, c) in &costs {
        let smoke = if c.smoke { " _smoke_" } else { "" };
        let _ = writeln!(
            w,
            "| {name}{smoke} | {} | {} | {} | {} | {:.1} ns |",
            thousands(c.first as u64),
            ns(c.first_ns),
            thousands(c.last as u64),
            ns(c.last_ns),
            c.ns_per_slot()
        );
    }
    let (_, c) = costs[0];
    let nft = d
        .bounds()
        .into_iter()
        .filter(|s| s.key.scenario.starts_with("nft_empty_batch"))
        .filter_map(|s| s.median_ns)
        .min();
    let nft = nft
        .map(|m| {
            format!(
                "; an nf_tables commit, for its part, costs at least the {} of an empty batch",
                ns(m as f64)
            )
        })
        .unwrap_or_default();
    let _ = writeln!(
        w,
        "\nThe kernel finds an ipset by name with a linear scan of the namespace's set \
         slots (`find_set_and_id()` in `net/netfilter/ipset/ip_set_core.c`, one `strncmp` \
         per slot), so a one-element message costs about {:.1} ns more for every set \
         created before its target ({} in slot {}, {} in slot {}, {:.1}× as much): a \
         delta's ipset messages are bound by the slots of the sets they touch{nft}.",
        c.ns_per_slot(),
        ns(c.first_ns),
        thousands(c.first as u64),
        ns(c.last_ns),
        thousands(c.last as u64),
        c.last_ns / c.first_ns
    );
    o
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::Record;
    use crate::stats::{summarize, BOUND};

    fn bound(scenario: &str, samples: &[u64], extra: &[(&str, f64)]) -> Record {
        let mut r = Record::new(BOUND, scenario, "kernel", 0, 0);
        r.samples_ns = samples.to_vec();
        for (n, v) in extra {
            r.set(n, *v);
        }
        r
    }

    fn slot_rec(cmd: &str, slot: usize, median: u64) -> Record {
        bound(
            &format!("ipset_{cmd}_slot_{slot}"),
            &[median - 100, median, median + 100],
            &[("slot", slot as f64), ("sets", 2000.0)],
        )
    }

    #[test]
    fn nothing_measured_says_so() {
        let md = section(&summarize(vec![]));
        assert!(md.starts_with("## Kernel bounds\n"), "{md}");
        assert!(md.contains("Not measured"), "{md}");
    }

    #[test]
    fn table_and_cost_per_slot() {
        let d = summarize(vec![
            bound("nft_empty_batch", &[3_300], &[("rules", 0.0)]),
            bound(
                "nft_empty_batch_5000_rules",
                &[3_400],
                &[("rules", 5000.0), ("chains", 1000.0)],
            ),
            slot_rec("del", 1999, 27_100),
            slot_rec("add", 1999, 27_000),
            slot_rec("add", 0, 3_700),
            slot_rec("add", 1000, 15_800),
            slot_rec("del", 0, 3_800),
            bound("ipset_protocol", &[5_000, 5_100], &[("sets", 2000.0)]),
        ]);
        let add = slot_cost(&d, "add").unwrap();
        assert_eq!((add.first, add.last, add.smoke), (0, 1999, false));
        assert!((add.ns_per_slot() - 23_300.0 / 1999.0).abs() < 1e-9);
        assert!((slot_cost(&d, "del").unwrap().ns_per_slot() - 11.65).abs() < 0.01);

        let md = section(&d);
        assert!(
            md.contains(
                "| `ipset_protocol` | `IPSET_CMD_PROTOCOL`: no set looked up (answered by a \
                 reply, then the ACK) | 5.00 µs | 5.10 µs | 2 |"
            ),
            "{md}"
        );
        assert!(
            md.contains(
                "| `ipset_add_slot_1999` | one-element ADD to the `hash:ip` set in slot 1,999 \
                 of 2,000 | 27.0 µs | 27.1 µs | 3 |"
            ),
            "{md}"
        );
        assert!(md.contains(
            "empty nf_tables batch (`BATCH_BEGIN`, `BATCH_END`), `ip filter` table of 5,000 \
             rules in 1,000 chains | 3.40 µs"
        ));
        assert!(md.contains("`ip filter` table without rules | 3.30 µs"));
        // Rows: protocol, then slots in order (ADD before DEL), then the batches.
        let at = |s: &str| md.find(s).unwrap_or_else(|| panic!("{s} missing"));
        assert!(at("`ipset_protocol`") < at("`ipset_add_slot_0`"));
        assert!(at("`ipset_add_slot_0`") < at("`ipset_del_slot_0`"));
        assert!(at("`ipset_del_slot_0`") < at("`ipset_add_slot_1000`"));
        assert!(at("`ipset_del_slot_1999`") < at("`nft_empty_batch`"));
        assert!(at("`nft_empty_batch` |") < at("`nft_empty_batch_5000_rules`"));
        assert!(
            md.contains("| ADD | 0 | 3.70 µs | 1,999 | 27.0 µs | 11.7 ns |"),
            "{md}"
        );
        assert!(
            md.contains("| DEL | 0 | 3.80 µs | 1,999 | 27.1 µs | 11.7 ns |"),
            "{md}"
        );
        assert!(md.contains("costs about 11.7 ns more for every set created before its target"));
        assert!(md.contains("(3.70 µs in slot 0, 27.0 µs in slot 1,999, 7.3× as much)"));
        assert!(
            md.contains("at least the 3.30 µs of an empty batch"),
            "{md}"
        );
    }

    #[test]
    fn one_slot_or_smoke_only() {
        // A single slot gives no cost per slot; the table is still there.
        let d = summarize(vec![slot_rec("add", 0, 3_700)]);
        assert_eq!(slot_cost(&d, "add"), None);
        let md = section(&d);
        assert!(md.contains("`ipset_add_slot_0`"));
        assert!(md.contains("Cost per set slot: not measured"), "{md}");

        // A smoke pass is shown, and marked.
        let mut a = slot_rec("add", 0, 3_700);
        let mut b = slot_rec("add", 299, 7_200);
        a.smoke = true;
        b.smoke = true;
        let d = summarize(vec![a, b]);
        let c = slot_cost(&d, "add").unwrap();
        assert!(c.smoke && c.last == 299);
        let md = section(&d);
        assert!(md.contains("| `ipset_add_slot_299` _smoke_ |"), "{md}");
        assert!(md.contains("| ADD _smoke_ | 0 | 3.70 µs | 299 | 7.20 µs | 11.7 ns |"));
        // No nf_tables figure: the sentence leaves it out.
        assert!(!md.contains("empty batch"));
    }

    #[test]
    fn slot_from_the_name_when_the_figure_is_missing() {
        let d = summarize(vec![bound("ipset_del_slot_42", &[1], &[])]);
        let s = d.bounds()[0];
        assert_eq!((slot(s), command(s)), (Some(42), Some("del")));
        assert_eq!(
            describe(s),
            "one-element DEL from the `hash:ip` set in slot 42"
        );
    }
}
