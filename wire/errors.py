"""The error types of :mod:`wire`.

Callers decoding untrusted input catch :class:`WireError` and nothing else: every
decoder in this package turns whatever went wrong into one of these.
"""


class WireError(ValueError):
    """Base of every error raised while reading or writing the protocol."""


class MessageError(WireError):
    """A message envelope or its data is malformed (names the field at fault)."""


class SerializationError(WireError):
    """A payload could not be serialized or deserialized."""


class QueueInfoError(WireError):
    """A queue description (or the ``amqp_creds`` bundle) is invalid."""
