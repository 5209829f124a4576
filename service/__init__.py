"""The self-hosted compute service the official SDK and endpoints talk to.

Unmodified ``globus-compute-sdk`` code reaches it with only
``GLOBUS_SDK_ENVIRONMENT=local`` (the SDK's fixed ``http://localhost:5000``),
``GLOBUS_SDK_SERVICE_URL_AUTH=http://localhost:5000/`` and
``GLOBUS_COMPUTE_CLIENT_ID``/``SECRET``; the official ``globus-compute-endpoint``
4.19 and our own manager register and receive work the same way.

Modules, outside in:

- :mod:`service.cli`: ``compute-service start`` and ``client add|list|remove``.
- :mod:`service.app`: the FastAPI factory and the lifetimes of the parts.
- ``service.routes_*``: auth (token, userinfo), functions, endpoints, tasks.
- :mod:`service.bodies`, :mod:`service.errors`: request validation and the
  official error body (no Globus Auth login hints in 401/403 bodies).
- :mod:`service.auth`: clients bound to identity sets, hashed secrets,
  expiring tokens, one token per resource server (``funcx_service`` for the
  compute scope, ``auth.globus.org`` for ``openid``/``manage_projects``).
- :mod:`service.routing`: the AMQP topology and every message the service
  sends (start commands, tasks), decided in pure code.
- :mod:`service.broker`, :mod:`service.forwarder`: the two broker edges: a
  locked publisher for request handlers, one consumer thread for results and
  heartbeats.
- :mod:`service.schema`, :mod:`service.store`: SQLAlchemy tables and queries
  (SQLite by default, PostgreSQL through psycopg v3).

Visibility: a caller sees only their own tasks and task groups, the
functions they own or that are public, and the endpoints they own or that
are public; only owners change or delete. Reading or using a hidden object
answers 404 (its existence does not leak); changing a visible one, or
registering an endpoint id someone else owns, answers 403.
"""
