"""Store URLs for several nodes. Nothing connects until the app opens."""

from tickerq import TickerQ
from tickerq.stores.sql import SqlStore

# A node of a cluster: a distinct id, its slots, the shared database.
app = TickerQ("postgresql://tickerq@db.internal/jobs", node_id="worker-1", max_concurrency=16)

# The node's connection budget: pool_size counts every connection it opens.
app = TickerQ("postgresql://tickerq@db.internal/jobs?pool_size=5")
same = TickerQ(SqlStore("postgresql://tickerq@db.internal/jobs", pool_size=5))

# Through PgBouncer (transaction pooling), LISTEN on a direct connection.
bouncer = TickerQ(
    "postgresql://tickerq@pgbouncer:6432/jobs?pgbouncer=true"
    "&listen_url=postgresql%3A%2F%2Ftickerq%40db.internal%3A5432%2Fjobs"
)
also = SqlStore(
    "postgresql://tickerq@pgbouncer:6432/jobs",
    pgbouncer=True,
    listen_url="postgresql://tickerq@db.internal:5432/jobs",
)

if __name__ == "__main__":
    for store in (app.store, same.store, bouncer.store, also):
        assert isinstance(store, SqlStore)
        print(store.budget)
    # ConnectionBudget(total=5, pool=3, hot_path=True, listen=True)
    # ConnectionBudget(total=5, pool=3, hot_path=True, listen=True)
    # ConnectionBudget(total=3, pool=1, hot_path=True, listen=True)
    # ConnectionBudget(total=3, pool=1, hot_path=True, listen=True)
