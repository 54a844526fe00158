"""Business errors the API turns into 4xx responses with a code."""


class TransferRejected(Exception):
    """A request the service refuses; nothing was stored or published."""

    http_status = 400

    def __init__(self, code: str, message: str, http_status: int | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        if http_status is not None:
            self.http_status = http_status
