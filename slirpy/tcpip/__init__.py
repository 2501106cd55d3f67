"""The pure TCP/IP core: bytes and `now` in, frames, events and deadlines out.

Standard library only. No sockets, clocks, asyncio or os here (tests/unit/test_purity.py).
"""
