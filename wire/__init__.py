"""The protocol every part of compute-agent speaks, defined in one place.

- :mod:`wire.messages`: the messagepack v1 envelope and its message types.
- :mod:`wire.serializer`: the payload format of the official Globus Compute SDK.
- :mod:`wire.queue_info`: the queue descriptions the service hands to endpoints.
- :mod:`wire.amqp`: connecting to RabbitMQ without leaking passwords.
- :mod:`wire.forked_call`: one call made in a forked child, its JSON answer sent
  back through a pipe (the manager's and the user endpoint's one-off imports).

No other package re-declares a message field; they import from here.
"""

from wire.errors import MessageError, QueueInfoError, SerializationError, WireError

__all__ = ["MessageError", "QueueInfoError", "SerializationError", "WireError"]
