"""The web app: endpoints, user endpoints and tasks at a glance, in a browser, under ``/app``.

Server-rendered pages (Jinja2), inline SVG charts, and one small script of
our own served from ``/app/static``: nothing is fetched from elsewhere.
:func:`service.webapp.install.install` is all the service's application calls.
"""
