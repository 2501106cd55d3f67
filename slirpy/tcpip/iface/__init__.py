"""The stack's interface to the guest, one module per layer.

`link` (virtio header, Ethernet, ethertype demux, the frame queue), `neighbours` (ARP and the
queues that wait for the guest's MAC), `ipv4` (the IPv4 input and header building), then the
transport handlers `tcp`, `udp` and `icmp` (echo responder, echo proxy, ICMP errors), and
`framer` (TCP segments into IPv4 frames, GSO). The transport handlers take addresses as packed
bytes (addr.py) and leave the IP header to `Link.send_ip` / the framer; IPv6 adds `ipv6`, an
NDP `neighbours` half and a framer, not branches in them. Dependencies run one way: stack.py
wires these together; a module imports only those below it (link <- neighbours <- ipv4;
icmp, the error channel, <- udp, tcp; framer <- tcp) and never stack.py.
"""
