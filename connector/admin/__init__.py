"""The admin HTTP API and the web console on it, served by ``run`` with an ``admin:``
section (docs/architecture.md, "The admin API and console").

* :mod:`connector.admin.source` — :class:`AdminSource`: what each endpoint reads or
  changes (the store, the numbers, the control), as plain data;
* :mod:`connector.admin.app` — the Starlette routes, the token and the console's session;
* :mod:`connector.admin.openapi` — the API's OpenAPI document;
* :mod:`connector.admin.console` — the console's server-rendered pages;
* :mod:`connector.admin.history` — the last minutes' throughput and latency, as SVG charts;
* :mod:`connector.admin.server` — :class:`AdminServer`, served beside the pipeline;
* ``static/`` — the console's stylesheet and script (package data: no CDN, no build).
"""
