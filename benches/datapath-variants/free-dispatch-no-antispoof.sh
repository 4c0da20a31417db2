# Both of the above: what is left is the conntrack floor, the mark reset, and the pair's
# own group and policy chains.
. "$VARIANT_DIR/free-dispatch.sh"
. "$VARIANT_DIR/no-antispoof.sh"
