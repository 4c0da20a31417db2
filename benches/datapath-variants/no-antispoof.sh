# netfence without its anti-spoofing rule, the one set lookup every packet from a pod makes.
. "$VARIANT_DIR/groups.sh"
iptables-nft -t filter -D nf-fw "$(fw_rule nf-podsrc4)"
