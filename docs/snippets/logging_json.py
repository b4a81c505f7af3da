import logging

from tickerq.logs import JsonFormatter

handler = logging.StreamHandler()
handler.setFormatter(JsonFormatter())
logging.basicConfig(level=logging.INFO, handlers=[handler])

if __name__ == "__main__":
    logging.getLogger("tickerq.app").info("hello", extra={"action": "demo", "node": "n1"})
    # {"time": "...", "level": "INFO", "logger": "tickerq.app", "message": "hello",
    #  "action": "demo", "node": "n1"}
