# Sourced by the variants (see benches/datapath.rs, NETFENCE_DATAPATH_VARIANT): what they
# need to know of netfence's ruleset, read from it rather than named, so that they keep
# working when chain names change.

# The chains that a pod's namespace chain sends it to, in their order: $1 is eg or in,
# $2 the pod's address. These are the chains a perfect dispatch would jump to directly.
group_chains() {
    if [ "$1" = eg ]; then side=src; else side=dst; fi
    iptables-nft-save -t filter | awk -v pre="-A nf-$1-" -v side="$side" '
        index($0, pre) == 1 && / --match-set / {
            set = ""; target = ""
            for (i = 1; i <= NF; i++) {
                if ($i == "--match-set" && $(i + 2) == side) set = $(i + 1)
                if ($i == "-j") target = $(i + 1)
            }
            if (set != "" && target != "" && target != "DROP") print set, target
        }' | while read -r set target; do
        if ipset test "$set" "$2" 2>/dev/null; then echo "$target"; fi
    done
}

# The number of nf-fw's first rule that mentions $1.
fw_rule() {
    iptables-nft -t filter -S nf-fw | awk -v s="$1" 'NR > 1 && index($0, s) { print NR - 1; exit }'
}

# The pods' addresses, from the anti-spoofing set (address,interface).
pod_addresses() {
    ipset save nf-podsrc4 | awk '$1 == "add" { split($3, a, ","); print a[1] }'
}
