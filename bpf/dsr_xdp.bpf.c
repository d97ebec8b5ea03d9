// SPDX-License-Identifier: GPL-2.0-or-later
/* The DSR fast path (src/link/xdp.rs): an XDP program on the DSR interface that forwards the
 * frames of clients the engine has already placed. The engine learns "client -> backend MAC"
 * into pen_dsr_flows; a hit of the current generation rewrites both MACs and sends the frame
 * back out (XDP_TX). Everything else passes to the engine unchanged. The Rust model of what
 * this program matches is `xdp::flow_key`; the tests run both on mutated frames. */
#include "pen.h"

/* Set by the loader (aya's EbpfLoader::override_global) from the engine's configuration. */
volatile const __u16 pen_mac[3] = {0}; /* the DSR interface's MAC, as struct eth holds it */
volatile const __be32 pen_vip = 0;      /* as on the wire */
volatile const __be16 pen_port = 0;     /* as on the wire; 0 = every port */
volatile const __u8 pen_proto = 0;      /* IPPROTO_TCP or IPPROTO_UDP (-U) */
volatile const __u8 pen_per_flow = 0;   /* -r: the client's source port is in the key */

/* xdp::Key */
struct client {
	__be32 addr;
	__be16 port; /* 0 without -r */
	__u16 pad;
};

/* xdp::Entry */
struct backend {
	__u16 mac[3]; /* as struct eth holds it */
	__u8 pad[6];
	__u32 generation;
};

/* xdp::KernelCounts */
struct counts {
	__u64 frames;
	__u64 bytes;
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536); /* the loader sets xdp::MAX_CLIENTS */
	__type(key, struct client);
	__type(value, struct backend);
} pen_dsr_flows SEC(".maps");

/* Entry 0: the generation entries must carry to be used. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u32);
} pen_dsr_gen SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct counts);
} pen_dsr_count SEC(".maps");

/* The two ports right after an IPv4 header without options. */
struct ports {
	__be16 src;
	__be16 dst;
};

SEC("xdp")
int pen_dsr(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct eth *eth = data;
	struct iphdr *ip = (void *)(eth + 1);
	struct ports *ports = (void *)(ip + 1);
	__u32 zero = 0;

	/* One bounds check covers every header byte read below. */
	if ((void *)(ports + 1) > data_end)
		return XDP_PASS;
	__u16 mac[3] = {pen_mac[0], pen_mac[1], pen_mac[2]};
	if (eth->dst[0] != mac[0] || eth->dst[1] != mac[1] || eth->dst[2] != mac[2])
		return XDP_PASS;
	if (!plain_ipv4(eth, ip) || ip->protocol != pen_proto || ip->daddr != pen_vip)
		return XDP_PASS;
	if (pen_port != 0 && ports->dst != pen_port)
		return XDP_PASS;

	struct client key = {
		.addr = ip->saddr,
		.port = pen_per_flow ? ports->src : 0,
		.pad = 0,
	};
	__u32 *generation = bpf_map_lookup_elem(&pen_dsr_gen, &zero);
	if (!generation)
		return XDP_PASS;
	struct backend *b = bpf_map_lookup_elem(&pen_dsr_flows, &key);
	if (!b || b->generation != *generation)
		return XDP_PASS;

	/* Destination MAC := the backend's, source MAC := ours. */
	__builtin_memcpy(eth->dst, b->mac, sizeof(eth->dst));
	__builtin_memcpy(eth->src, mac, sizeof(eth->src));

	struct counts *c = bpf_map_lookup_elem(&pen_dsr_count, &zero);
	if (c) {
		__sync_fetch_and_add(&c->frames, 1);
		__sync_fetch_and_add(&c->bytes, sizeof(*eth) + bpf_ntohs(ip->tot_len));
	}
	return XDP_TX;
}

char LICENSE[] SEC("license") = "GPL";
