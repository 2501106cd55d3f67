"""Wire formats, one module per header (DESIGN §2/§4).

Only `tcp` lives here so far: it moved when `slirpy.tcpip.tcp` became the package of the TCP
connection (a module and a package cannot share that name). The other headers follow.
"""
