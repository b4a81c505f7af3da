from tickerq.contrib.django import job


@job(cron="0 25 * * *")
def nightly() -> None:
    pass


@job
def two_params(a: int, b: int) -> None:
    pass
