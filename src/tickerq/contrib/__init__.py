"""Integrations with other tools, each behind an extra (``pip install 'tickerq[NAME]'``).

- :mod:`tickerq.contrib.prometheus`: metrics for Prometheus (``tickerq[prometheus]``).
"""
