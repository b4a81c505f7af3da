"""Integrations with other tools, each behind an optional extra
(``pip install 'tickerq[NAME]'``).

- :mod:`tickerq.contrib.django`: a Django app (``tickerq[django]``).
- :mod:`tickerq.contrib.fastapi`, :mod:`tickerq.contrib.starlette`: a lifespan that
  opens the app with the web app, and a dependency (``tickerq[fastapi]``).
- :mod:`tickerq.contrib.flask`: a Flask extension over the sync facade (``tickerq[flask]``).
- :mod:`tickerq.contrib.otel`: OpenTelemetry tracing (``tickerq[otel]``).
- :mod:`tickerq.contrib.prometheus`: Prometheus metrics (``tickerq[prometheus]``).
"""
