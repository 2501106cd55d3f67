"""The stack's interface to the guest, one module per layer.

`link` (virtio header, Ethernet, ethertype demux, the frame queue, `IpFamily`), `neighbours`
(ARP, the one neighbour table, and the queues that wait for the guest's MAC) with `ndp` beside
it (neighbour discovery and router advertisements), `ipv4` and `ipv6` (the IP inputs), then the
transport handlers `tcp`, `udp`, `icmp` and `icmpv6` (echo responders, echo proxy, the ICMP
and ICMPv6 errors), and `framer` / `framer6` (TCP segments into IPv4 / IPv6 frames, GSO). The
transport handlers take addresses as packed bytes of either length (addr.py) and leave the IP
header to `Link.send_ip` / the framers; what differs per family is picked once per flow. IPv6
came as the modules ipv6, ndp, icmpv6 and framer6, not as branches in the others.
Dependencies run one way: stack.py wires these together; a module imports only those below it
(link <- neighbours <- ndp <- ipv4, ipv6; icmp <- icmpv6, the error channels, <- udp, tcp;
framer <- framer6 <- tcp) and never stack.py.
"""
