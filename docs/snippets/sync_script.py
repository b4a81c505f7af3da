"""A plain script (or a Django view, a Flask route): no async code needed."""

from dataclasses import dataclass

from tickerq import TickerContext, TickerQ

app = TickerQ("sqlite:///jobs.db")


@dataclass
class Resize:
    path: str
    width: int


@app.function
def resize(ctx: TickerContext[Resize]) -> str:
    return f"{ctx.request.path} at {ctx.request.width}px"


def main() -> None:
    app.sync.start()  # the engine runs on a background thread
    try:
        ticker = app.sync.enqueue(resize, Resize("cat.png", 640))
        later = resize.sync.schedule(Resize("dog.png", 320), after=3600)
        done = app.sync.time_tickers.wait(ticker.id, timeout=10)  # every manager method, blocking
        print(done.status, done.result)  # DONE cat.png at 640px
        print(app.sync.time_tickers.get(later.id).status)  # IDLE
    finally:
        app.sync.stop()


if __name__ == "__main__":
    main()
