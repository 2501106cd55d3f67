"""The one exception a parser may raise."""


class MalformedPacket(ValueError):
    """Input bytes that do not form a valid header.

    `reason` is a short dotted name (``"ipv4.bad_ihl"``) that the stack turns into the drop
    counter ``rx.drop.<reason>``.
    """

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason
