# Free dispatch, and no mark either: the pair's group and policy chains are copied inline
# into two chains of their own, where an allowing line returns at once instead of setting
# an allow bit, and the last line drops. nf-fw loses its mark reset. What is left is the
# policy's own lookups; set against free-dispatch.sh, it measures what the allow marks
# cost. A real layout like it would copy every policy's lines into every group chain that
# needs them.
. "$VARIANT_DIR/groups.sh"

# The lines of chain $1 with every jump to another chain replaced by that chain's lines,
# the mark tests dropped and an allow (a MARK target) turned into a return.
inline() {
    iptables-nft -t filter -S "$1" | tail -n +2 | sed -e 's/ -m comment --comment "[^"]*"//' \
        -e 's/ -m mark --mark 0x0\/0x[0-9a-f]*//' -e "s/^-A $1 //" |
        while read -r line; do
            case "$line" in
            *"-j MARK "*) echo "${line%%-j MARK *}-j RETURN" ;;
            "-j nf-"*) inline "${line#-j }" ;;
            *) echo "unexpected line in $1: $line" >&2; exit 1 ;;
            esac
        done
}

eg=$(group_chains eg "$CLIENT")
in=$(group_chains in "$SERVER")
[ -n "$eg" ] && [ -n "$in" ] || { echo "the pair is not isolated both ways" >&2; exit 1; }
{
    echo '*filter'
    echo ':nf-xeg - [0:0]'
    echo ':nf-xin - [0:0]'
    for c in $eg; do inline "$c"; done | sed 's/^/-A nf-xeg /'
    echo '-A nf-xeg -j DROP'
    for c in $in; do inline "$c"; done | sed 's/^/-A nf-xin /'
    echo '-A nf-xin -j DROP'
    echo "-R nf-fw $(fw_rule nf-iso-in4) -d $SERVER/32 -j nf-xin"
    echo "-R nf-fw $(fw_rule nf-iso-eg4) -s $CLIENT/32 -j nf-xeg"
    echo "-D nf-fw $(fw_rule MARK)"
    echo 'COMMIT'
} | iptables-nft-restore --noflush
iptables-nft -t filter -S nf-xeg
iptables-nft -t filter -S nf-xin
