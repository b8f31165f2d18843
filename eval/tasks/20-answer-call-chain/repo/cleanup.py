"""Clean up the archive directory."""
import argparse

from archive import index, policy


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--root", default="archive-data")
    parser.add_argument("--prune", action="store_true", help="delete expired entries")
    parser.add_argument("--days", type=int, default=policy.DEFAULT_KEEP_DAYS)
    args = parser.parse_args()
    entries = index.load(args.root)
    if args.prune:
        expired = policy.select_expired(entries, args.days)
        index.drop(args.root, expired)
    index.prune_cache()
    print(f"{len(entries)} entries checked")


if __name__ == "__main__":
    main()
