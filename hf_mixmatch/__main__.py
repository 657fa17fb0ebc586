import sys

try:
    from .cli import entry
except KeyboardInterrupt:  # Ctrl-C while Python was still importing the command line
    print("hf-mixmatch: interrupted", file=sys.stderr)
    sys.exit(130)

entry()
