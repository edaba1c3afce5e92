#!/usr/bin/env bash
# Shell functions of the benchmarks between network namespaces (loss.sh, xdp.sh source
# this file): the namespaces and the veth pairs that join them.

# Makes the network namespaces $1 and $2, each with its loopback up.
netns_pair() {
    ip netns add "$1"
    ip netns add "$2"
    ip -n "$1" link set lo up
    ip -n "$2" link set lo up
}

# Joins namespace $1 to namespace $2 by a veth pair: interface $3 with address $4 in $1,
# interface $5 with address $6 in $2, both up.
veth_pair() {
    local a=$1 b=$2 a_if=$3 a_addr=$4 b_if=$5 b_addr=$6
    ip -n "$a" link add "$a_if" type veth peer name "$b_if" netns "$b"
    ip -n "$a" addr add "$a_addr" dev "$a_if"
    ip -n "$b" addr add "$b_addr" dev "$b_if"
    ip -n "$a" link set "$a_if" up
    ip -n "$b" link set "$b_if" up
}
