import sys

from weatherly import __version__


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if argv == ["--version"]:
        print(f"weatherly {__version__}")
        return 0
    print("usage: weatherly [--version] CITY")
    return 2
