"""Wire formats, one module per header (DESIGN §2/§4): virtio-net, Ethernet, ARP, IPv4, ICMP,
UDP, TCP. Each parses into a validated value and builds bytes; `MalformedPacket`
(tcpip/errors.py) is raised only from here. The hot path and the tests use these same
parsers. An IPv6 header, ICMPv6 and NDP are new modules beside them.
"""
