"""Integrations with other tools, each behind an optional extra
(``pip install 'tickerq[NAME]'``).

- :mod:`tickerq.contrib.django`: a Django app (``tickerq[django]``).
- :mod:`tickerq.contrib.otel`: OpenTelemetry tracing (``tickerq[otel]``).
- :mod:`tickerq.contrib.prometheus`: Prometheus metrics (``tickerq[prometheus]``).
"""
