/* SPDX-License-Identifier: GPL-2.0-or-later */
/* Shared by pen's BPF programs: the header layouts they read (the kernel's own structs, so
 * every offset has a name) and the verdicts newer than the uapi headers Debian ships. */
#ifndef PEN_BPF_H
#define PEN_BPF_H

#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/if_packet.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/pkt_cls.h>
#include <linux/udp.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

/* IPv4 header flags: "more fragments" and the fragment offset. A datagram with either set is
 * a fragment (DF and the reserved bit do not matter). */
#define PEN_IP_MF 0x2000
#define PEN_IP_OFFSET 0x1fff

/* TCX_NEXT (linux/bpf.h of Linux 6.6+; Debian 12's uapi headers predate it): on to the next
 * program and then the stack. */
#define PEN_TCX_NEXT -1

/* The Ethernet header, each MAC as three 16-bit words. (The uapi's struct ethhdr is packed,
 * so clang would read and write it a byte at a time.) */
struct eth {
	__u16 dst[3];
	__u16 src[3];
	__be16 proto;
};
_Static_assert(sizeof(struct eth) == ETH_HLEN, "an Ethernet header is 14 bytes");

/* An untagged Ethernet frame carrying IPv4 without options that is not a fragment. */
static __always_inline int plain_ipv4(const struct eth *eth, const struct iphdr *ip)
{
	return eth->proto == bpf_htons(ETH_P_IP) && ip->version == 4 && ip->ihl == 5 &&
	       !(ip->frag_off & bpf_htons(PEN_IP_MF | PEN_IP_OFFSET));
}

#endif
