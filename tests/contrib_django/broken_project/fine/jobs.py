from tickerq.contrib.django import job


@job
def tidy() -> None:
    pass
