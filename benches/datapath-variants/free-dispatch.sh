# Free dispatch, the bound of any dispatch scheme: nf-fw sends the client straight to its
# egress group chains and the server straight to its ingress ones by native address
# compares, where netfence looks up the isolation sets, the buckets and the namespace's
# selector sets. Nothing real can do this (pod churn would rewrite rules); it measures what
# the dispatch costs.
. "$VARIANT_DIR/groups.sh"
eg=$(group_chains eg "$CLIENT")
in=$(group_chains in "$SERVER")
[ -n "$in" ] || { echo "the server is in no ingress group chain" >&2; exit 1; }
{
    echo '*filter'
    echo ':nf-xeg - [0:0]'
    echo ':nf-xin - [0:0]'
    for c in $eg; do echo "-A nf-xeg -m mark --mark 0x0/0x20000 -j $c"; done
    echo '-A nf-xeg -m mark --mark 0x0/0x20000 -j DROP'
    for c in $in; do echo "-A nf-xin -m mark --mark 0x0/0x10000 -j $c"; done
    echo '-A nf-xin -m mark --mark 0x0/0x10000 -j DROP'
    # Ingress first: deleting the egress line (a client isolated for nothing) renumbers.
    echo "-R nf-fw $(fw_rule nf-iso-in4) -d $SERVER/32 -j nf-xin"
    if [ -n "$eg" ]; then
        echo "-R nf-fw $(fw_rule nf-iso-eg4) -s $CLIENT/32 -j nf-xeg"
    else
        echo "-D nf-fw $(fw_rule nf-iso-eg4)"
    fi
    echo 'COMMIT'
} | iptables-nft-restore --noflush
