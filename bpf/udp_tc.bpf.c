// SPDX-License-Identifier: GPL-2.0-or-later
/* The UDP fast path (src/proxy/udp/offload.rs): a tc program on the ingress of the interfaces
 * that carry offloaded flows. Every plain IPv4/UDP datagram addressed to this host is looked
 * up by its four-tuple in pen_udp_flows; on a hit the addresses and ports are rewritten, the
 * IP and UDP checksums updated incrementally (a zero UDP checksum stays zero), the time and
 * counters noted, and the frame sent out of the entry's interface by bpf_redirect_neigh (the
 * kernel's route and neighbour tables fill in the Ethernet header). Everything else goes on
 * unchanged. The Rust model is `offload::model`; the tests run both on mutated frames. */
#include "pen.h"

/* offload::Key: a four-tuple as on the wire (bytes 26..38 of the frame). */
struct tuple {
	__be32 saddr;
	__be32 daddr;
	__be16 sport;
	__be16 dport;
};

/* offload::Entry: datagrams of the key's tuple leave as `to` through `ifindex`; the program
 * writes the rest. */
struct entry {
	struct tuple to;
	__u32 ifindex;
	__u64 last_ns; /* bpf_ktime_get_ns() of the last datagram */
	__u64 packets;
	__u64 bytes; /* UDP payload */
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 131072); /* the loader sets offload::MAX_ENTRIES */
	__type(key, struct tuple);
	__type(value, struct entry);
} pen_udp_flows SEC(".maps");

/* Offsets in the frame, for the skb helpers. */
#define IP_CSUM_OFF (ETH_HLEN + __builtin_offsetof(struct iphdr, check))
#define IP_SADDR_OFF (ETH_HLEN + __builtin_offsetof(struct iphdr, saddr))
#define UDP_CSUM_OFF (ETH_HLEN + sizeof(struct iphdr) + __builtin_offsetof(struct udphdr, check))

SEC("classifier") /* aya 0.14 knows tc programs by this section name */
int pen_udp_fast(struct __sk_buff *skb)
{
	if (skb->pkt_type != PACKET_HOST)
		return PEN_TCX_NEXT;
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;
	struct eth *eth = data;
	struct iphdr *ip = (void *)(eth + 1);
	struct udphdr *udp = (void *)(ip + 1);

	if ((void *)(udp + 1) > data_end)
		return PEN_TCX_NEXT;
	if (!plain_ipv4(eth, ip) || ip->protocol != IPPROTO_UDP)
		return PEN_TCX_NEXT;

	struct tuple key = {
		.saddr = ip->saddr,
		.daddr = ip->daddr,
		.sport = udp->source,
		.dport = udp->dest,
	};
	/* Payload bytes, for the counter (16 bits, so a bogus length stays small). */
	__u64 payload = (__u16)(bpf_ntohs(udp->len) - sizeof(*udp));

	struct entry *e = bpf_map_lookup_elem(&pen_udp_flows, &key);
	if (!e)
		return PEN_TCX_NEXT;
	e->last_ns = bpf_ktime_get_ns();
	__sync_fetch_and_add(&e->packets, 1);
	__sync_fetch_and_add(&e->bytes, payload);

	/* Addresses: the IP header checksum and the UDP checksum's pseudo header. From here on a
	 * failing helper drops the frame: a half-rewritten datagram must not reach anyone. */
	__s64 diff = bpf_csum_diff(&key.saddr, 8, &e->to.saddr, 8, 0);
	if (bpf_l3_csum_replace(skb, IP_CSUM_OFF, 0, diff, 0))
		return TC_ACT_SHOT;
	if (bpf_l4_csum_replace(skb, UDP_CSUM_OFF, 0, diff, BPF_F_PSEUDO_HDR | BPF_F_MARK_MANGLED_0))
		return TC_ACT_SHOT;
	/* Ports: the UDP checksum only. */
	diff = bpf_csum_diff((__be32 *)&key.sport, 4, (__be32 *)&e->to.sport, 4, 0);
	if (bpf_l4_csum_replace(skb, UDP_CSUM_OFF, 0, diff, BPF_F_MARK_MANGLED_0))
		return TC_ACT_SHOT;
	/* The new four-tuple, then out through the interface the entry names. */
	if (bpf_skb_store_bytes(skb, IP_SADDR_OFF, &e->to, sizeof(e->to), 0))
		return TC_ACT_SHOT;
	return bpf_redirect_neigh(e->ifindex, (void *)0, 0, 0);
}

char LICENSE[] SEC("license") = "GPL";
