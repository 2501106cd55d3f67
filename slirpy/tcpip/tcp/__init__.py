"""The TCP endpoint of a guest flow (RFC 9293), sans-I/O, one concern per module.

`connection` holds `TcpConnection` (its state record, opening, commands, timers and the first
steps of SEGMENT ARRIVES); `arrival` the ACK and text steps; `transmit` what goes out;
`timestamps` the RFC 7323 rules;
`state` the states and the close-side transition table; `congestion`, `recovery` (RTT
estimator, SACK scoreboard) and `reassembly` sit behind small interfaces; `events` are what
the connection reports to its owner. Import from the modules; this file exports nothing.

What it implements
------------------
* The eleven states and the SEGMENT ARRIVES rules of RFC 9293 §3.10.7 in every state, active
  and passive open (the passive side emits nothing until ``accept()``: the stack opens the
  host socket first), simultaneous open and close, half-close both ways, TIME-WAIT
  (``params.time_wait``, short but present; RST is ignored there, RFC 1337).
* Segment acceptability (§3.10.7.4, zero windows included), RST/SYN/ACK hardening of
  RFC 5961 (§3.2 exact-RST, §4 SYN -> challenge ACK, §5.2 ACK range).
* MSS (536 when absent, RFC 9293 §3.7.1) and window scaling (RFC 7323 §2, only when both
  SYNs carry it, shift capped at 14); SACK (RFC 2018) when both SYNs offer it.
* Timestamps (RFC 7323 §3-5) when both SYNs carry them (``params.timestamps``, on by default):
  every segment but a RST carries TSval (a millisecond clock from a per-connection offset) and
  TS.Recent; 12 bytes come off SND.MSS for them. RTT samples come from the echo of every ACK of
  new data, retransmissions included (not an echo older than our last retransmission: it would
  time an earlier copy), and so do the peer's: a Linux guest takes no sample in loss recovery
  after an RTO without them (Karn), so its backoff would only grow. PAWS drops data or a FIN
  whose TSval is older than TS.Recent (pure ACKs pass: a reordered one is harmless); TS.Recent
  lapses after 24 days unrefreshed (§5.5). The rules: `timestamps`.
* Retransmission timeout per RFC 6298 with Karn's rule (one timed segment at a time) and
  exponential backoff, undone once new data is acknowledged (BSD/Linux practice); after
  ``max_retransmits`` consecutive expiries the connection gives up with ``Reset('timeout')``.
  An RTO goes back to SND.UNA (go-back-N). Zero-window probing with a persist timer that
  never gives up while the peer answers (§3.8.6.1).
* Limited transmit (RFC 3042): each of the first two duplicate ACKs lets one new segment out
  beyond the congestion window.
* Every arrival that carries data is acknowledged: at once, or after ``params.ack_delay``
  (see `arrival.receive_text`); each out-of-order arrival gets its own duplicate ACK
  (RFC 5681 §4.2) with SACK blocks. ``set_receive_paused`` freezes the right edge.
* GSO: with ``params.gso_max`` a data segment may carry up to ``gso_max`` bytes (rounded
  down to a multiple of SND.MSS); the kernel cuts it into MSS-sized packets.

What it deliberately does not do
--------------------------------
RFC 6675's full pipe accounting and RACK-TLP (a loss with fewer than three segments in flight
after it, limited transmit's (RFC 3042) two included, waits for the RTO), ECN, urgent data
(URG is ignored), data carried on SYNs (ignored; the peer retransmits it), Nagle,
keep-alives, challenge-ACK rate limiting (RFC 5961 §7: the per-flush coalescing bounds it), a
LISTEN state (the stack demultiplexes SYNs itself; ``TcpState.LISTEN`` exists for names only),
and ``FIN_WAIT_2`` timeouts (the flow table's idle expiry covers an absent peer).

Limits
------
State is bounded: the send buffer is whatever the owner queued (it bounds it with
``send_buffered``); the out-of-order queue holds at most the advertised window and at most
``OOO_MAX_SEGMENTS`` entries; at most one pending RST. An idle connection is a few hundred
bytes (``__slots__``, no preallocated buffers). No input segment sequence raises.
Sequence numbers are compared modulo 2**32 (`seqnum`), valid while windows stay < 2**30.
"""
