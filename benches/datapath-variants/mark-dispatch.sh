# Dispatch through the packet mark, as netfence could build it: in mangle FORWARD (the only
# table where the kernel lets `SET --map-mark` write the mark), a new connection's first
# packet gets its source pod's egress group and its destination pod's ingress group from
# two `hash:ip` sets with `skbinfo` members, six mark bits each. nf-fw then dispatches by
# native mark compares, with no isolation, bucket or selector lookups. Each pod gets some
# group; the pair's are found among eight other groups' compares in a list, about what a
# tree over 256 groups would cost. The price, not measured here: the mangle table, twelve
# more mark bits next to kube-proxy's and the CNI's, and every pod's group in two more sets.
. "$VARIANT_DIR/groups.sh"
eg=$(group_chains eg "$CLIENT")
in=$(group_chains in "$SERVER")
[ -n "$eg" ] && [ -n "$in" ] || { echo "the pair is not isolated both ways" >&2; exit 1; }
ipset create nf-xmk-eg hash:ip skbinfo maxelem 65536
ipset create nf-xmk-in hash:ip skbinfo maxelem 65536
n=0
pod_addresses | while read -r ip; do
    n=$((n + 1))
    g=$((n % 62 + 1)); [ "$g" = 37 ] && g=36
    h=$((n * 7 % 62 + 1)); [ "$h" = 41 ] && h=42
    [ "$ip" = "$CLIENT" ] && g=37
    [ "$ip" = "$SERVER" ] && h=41
    printf 'add nf-xmk-eg %s skbmark 0x%x/0x00fc0000\n' "$ip" $((g << 18))
    printf 'add nf-xmk-in %s skbmark 0x%x/0x3f000000\n' "$ip" $((h << 24))
done | ipset restore
{
    echo '*mangle'
    echo ':nf-xmk - [0:0]'
    echo '-A FORWARD -m conntrack --ctstate NEW -j nf-xmk'
    # The reset covers the allow bits too, so nf-fw's own reset goes.
    echo '-A nf-xmk -j MARK --set-xmark 0x0/0x3ffc0000'
    echo '-A nf-xmk -j SET --map-set nf-xmk-eg src --map-mark'
    echo '-A nf-xmk -j SET --map-set nf-xmk-in dst --map-mark'
    echo 'COMMIT'
    echo '*filter'
    for c in nf-xeg nf-xin nf-xegt nf-xint; do echo ":$c - [0:0]"; done
    for k in 1 2 3 4 5 6 7 8 37; do
        [ "$k" = 37 ] || k=$((k + 40))
        printf -- '-A nf-xegt -m mark --mark 0x%x/0x00fc0000 -g nf-xeg\n' $((k << 18))
    done
    for k in 1 2 3 4 5 6 7 8 41; do
        [ "$k" = 41 ] || k=$((k + 50))
        printf -- '-A nf-xint -m mark --mark 0x%x/0x3f000000 -g nf-xin\n' $((k << 24))
    done
    for c in $eg; do echo "-A nf-xeg -m mark --mark 0x0/0x20000 -j $c"; done
    echo '-A nf-xeg -m mark --mark 0x0/0x20000 -j DROP'
    for c in $in; do echo "-A nf-xin -m mark --mark 0x0/0x10000 -j $c"; done
    echo '-A nf-xin -m mark --mark 0x0/0x10000 -j DROP'
    echo "-R nf-fw $(fw_rule nf-iso-in4) -m mark ! --mark 0x0/0x3f000000 -j nf-xint"
    echo "-R nf-fw $(fw_rule nf-iso-eg4) -m mark ! --mark 0x0/0x00fc0000 -j nf-xegt"
    echo "-D nf-fw $(fw_rule MARK)"
    echo 'COMMIT'
} | iptables-nft-restore --noflush
iptables-nft -t mangle -S
