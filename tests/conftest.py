"""Set-up shared by every suite."""

from __future__ import annotations

import signal

# A process started in the background by a non-interactive shell (`cmd &`) inherits SIGINT
# ignored, and Python then installs no KeyboardInterrupt handler: the tests that press Ctrl-C
# would see nothing happen and leave a statement running on the loopback warehouse.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)
