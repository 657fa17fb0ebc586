import os
import sys

try:
    from .cli import main
except KeyboardInterrupt:  # Ctrl-C while Python was still importing the command line
    print("hf-mixmatch: interrupted", file=sys.stderr)
    sys.exit(130)

code = main()
if code == 130:
    # Interrupted and already reported in one line. A Ctrl-C that landed inside a module import leaves CPython
    # believing the KeyboardInterrupt went unhandled, and it would end the process by SIGINT (-2) instead of 130.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(130)
sys.exit(code)
