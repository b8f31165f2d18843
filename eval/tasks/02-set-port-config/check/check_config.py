"""Check: [server] port is 8080 and nothing else changed."""
import configparser
import sys

cfg = configparser.ConfigParser()
try:
    if not cfg.read("config.ini"):
        sys.exit("config.ini is missing")
except configparser.Error as e:
    sys.exit(f"config.ini does not parse: {e}")

expected = {
    "server": {"host": "127.0.0.1", "port": "8080", "workers": "4"},
    "logging": {"level": "info", "file": "status.log"},
}
actual = {s: dict(cfg[s]) for s in cfg.sections()}
if actual != expected:
    sys.exit(f"config.ini is {actual!r}, expected {expected!r}")
print("ok")
