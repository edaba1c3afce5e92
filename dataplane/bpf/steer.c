// SPDX-License-Identifier: MIT OR Apache-2.0
//
// multipoint's XDP program: steers the UDP packets of the subscribed groups into AF_XDP
// sockets and passes everything else to the kernel untouched.
//
// A packet is ours when its destination (address, UDP port, IP family) is a key of the
// `groups` map, which user space (dataplane/src/io/xdp/program.rs) keeps in step with
// subscribe/unsubscribe. Ours go to the AF_XDP socket of the queue they arrived on
// (`xsks`, keyed by rx queue index); a queue with no socket passes them to the kernel
// (the fallback action of bpf_redirect_map), so attaching the program before the sockets
// exist loses nothing.
//
// Only the headers needed to find the key are read here, and nothing is validated beyond
// what the key needs: a matching packet with a bad checksum, a bad UDP length or the
// first fragment of a fragmented datagram is still redirected, and the user-space parser
// counts and drops it. A packet whose port cannot be read (a non-first fragment, an IPv6
// fragment header, an IPv4 header length below 20 bytes, headers cut short) is ours when
// its destination address is a subscribed group's: user space keeps an address key (port
// 0, which no subscription uses) beside each group's key. So every malformed packet to a
// subscribed group is counted by reason in user space; the price is that fragments to
// the group's address on another port (which a feed never sends: it sets DF and sizes
// datagrams to the MTU) are dropped rather than reassembled.
//
// Built by dataplane/build.rs with `clang -target bpf -O2 -g` (BTF maps need the -g).
// No libbpf headers: the two helpers and the BTF map macros are declared below, the
// rest comes from the kernel's uapi headers.

#include <linux/types.h>
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/udp.h>

#define SEC(name) __attribute__((section(name), used))
#define __uint(name, val) int (*name)[val]
#define __type(name, val) typeof(val) *name
#define INLINE static inline __attribute__((always_inline))

static void *(*bpf_map_lookup_elem)(void *map, const void *key) = (void *)BPF_FUNC_map_lookup_elem;
static long (*bpf_redirect_map)(void *map, __u64 key, __u64 flags) = (void *)BPF_FUNC_redirect_map;

#define bpf_htons(x) ((__be16)__builtin_bswap16(x))

#define PROTO_UDP 17
#define ETH_P_8021Q_ 0x8100
#define ETH_P_8021AD_ 0x88A8
#define IP_OFFSET_MASK 0x1FFF
#define IPPROTO_FRAGMENT_ 44

// The key of `groups`; program.rs's GroupKey has the same layout (20 bytes).
struct group_key {
	__u8 addr[16];  // IPv4: the address in the first 4 bytes, the rest zero
	__be16 port;    // network byte order, as on the wire
	__u8 family;    // 4 or 6
	__u8 pad;       // zero
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 2048);  // program.rs MAX_GROUPS: a group key and an address key each
	__type(key, struct group_key);
	__type(value, __u32);  // flags, unused (1)
} groups SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_XSKMAP);
	__uint(max_entries, 64);
	__type(key, __u32);    // rx queue index
	__type(value, __u32);  // AF_XDP socket fd (on update)
} xsks SEC(".maps");

// Counter indices; program.rs's ProgramCounters reads them in this order.
enum {
	C_REDIRECTED = 0,  // ours, handed to the queue's socket
	C_NO_SOCKET = 1,   // ours, but no socket on the queue: passed
	C_NOT_OURS = 2,    // a complete packet not in `groups` (or not UDP, not IP): passed
	C_SHORT = 3,       // headers cut short before the UDP port, not to a subscribed address: passed
	C_FRAGMENT = 4,    // a non-first IPv4 fragment or an IPv6 fragment header, not to a subscribed address: passed
	C_COUNT = 5,
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, C_COUNT);
	__type(key, __u32);
	__type(value, __u64);
} counters SEC(".maps");

struct vlan_hdr_ {
	__be16 tci;
	__be16 proto;
};

INLINE int count(__u32 index, int action)
{
	__u64 *n = bpf_map_lookup_elem(&counters, &index);
	if (n)
		*n += 1;  // per-CPU: no other writer
	return action;
}

// A packet whose port cannot be read, with `key` holding its destination address and
// family (port 0): to the queue's socket when the address is a subscribed group's
// (counted as redirected), else to the kernel (counted as `reason`).
INLINE int unreadable(struct xdp_md *ctx, struct group_key *key, __u32 reason)
{
	key->port = 0;
	if (!bpf_map_lookup_elem(&groups, key))
		return count(reason, XDP_PASS);
	long action = bpf_redirect_map(&xsks, ctx->rx_queue_index, XDP_PASS);
	return count(action == XDP_REDIRECT ? C_REDIRECTED : C_NO_SOCKET, (int)action);
}

SEC("xdp")
int multipoint_xdp(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct group_key key = {};

	struct ethhdr *eth = data;
	if ((void *)(eth + 1) > data_end)
		return count(C_SHORT, XDP_PASS);
	__be16 proto = eth->h_proto;
	void *l3 = eth + 1;

	if (proto == bpf_htons(ETH_P_8021Q_) || proto == bpf_htons(ETH_P_8021AD_)) {
		struct vlan_hdr_ *vlan = l3;
		if ((void *)(vlan + 1) > data_end)
			return count(C_SHORT, XDP_PASS);
		proto = vlan->proto;
		l3 = vlan + 1;
	}

	if (proto == bpf_htons(ETH_P_IP)) {
		struct iphdr *ip = l3;
		if ((void *)(ip + 1) > data_end)
			return count(C_SHORT, XDP_PASS);
		if (ip->protocol != PROTO_UDP)
			return count(C_NOT_OURS, XDP_PASS);
		__builtin_memcpy(key.addr, &ip->daddr, 4);
		key.family = 4;
		// A packet to a subscribed group address whose UDP port cannot be read (a
		// non-first fragment, a header length below 20 bytes, headers cut short) goes
		// to the socket too, where the parser counts why it is dropped: the group's
		// address key (port 0) says the address is subscribed.
		if (ip->frag_off & bpf_htons(IP_OFFSET_MASK))
			return unreadable(ctx, &key, C_FRAGMENT);
		__u32 ihl = ip->ihl & 0x0f;
		if (ihl < 5)
			return unreadable(ctx, &key, C_SHORT);
		// The mask keeps the offset in 0..60 for the verifier.
		struct udphdr *udp = l3 + ihl * 4;
		if ((void *)(udp + 1) > data_end)
			return unreadable(ctx, &key, C_SHORT);
		// Read the port right after its bounds check, through the checked pointer:
		// the verifier loses the range if the compiler recomputes the address later.
		key.port = udp->dest;
	} else if (proto == bpf_htons(ETH_P_IPV6)) {
		struct ipv6hdr *ip6 = l3;
		if ((void *)(ip6 + 1) > data_end)
			return count(C_SHORT, XDP_PASS);
		__builtin_memcpy(key.addr, &ip6->daddr, 16);
		key.family = 6;
		// UDP right after the fixed header only: other extension headers pass, and a
		// fragment header to a subscribed address goes to the parser to be counted.
		if (ip6->nexthdr == IPPROTO_FRAGMENT_)
			return unreadable(ctx, &key, C_FRAGMENT);
		if (ip6->nexthdr != PROTO_UDP)
			return count(C_NOT_OURS, XDP_PASS);
		struct udphdr *udp = (void *)(ip6 + 1);
		if ((void *)(udp + 1) > data_end)
			return unreadable(ctx, &key, C_SHORT);
		key.port = udp->dest;
	} else {
		return count(C_NOT_OURS, XDP_PASS);
	}

	if (!bpf_map_lookup_elem(&groups, &key))
		return count(C_NOT_OURS, XDP_PASS);

	long action = bpf_redirect_map(&xsks, ctx->rx_queue_index, XDP_PASS);
	return count(action == XDP_REDIRECT ? C_REDIRECTED : C_NO_SOCKET, (int)action);
}

// GPL-compatible for the kernel (the helpers used here need not be, but a GPL-only one
// added later would); the file itself is under the project's licence.
char _license[] SEC("license") = "Dual MIT/GPL";
