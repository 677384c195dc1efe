"""Named crash points for fault-injection tests: ``crashpoint("relay.before_delete")`` kills the process.

One implementation serves the whole platform (``streams._faults``; the store cannot import this
package, so the code lives there). Disarmed unless a command-line entry point calls :func:`arm`:
the ``outbox relay`` command and the consumer test workers do, from ``OUTBOX_CRASH_POINTS``
(``name[:probability][,name...]``, e.g. ``relay.before_delete:0.05``), so a production process
never pays more than one dict lookup. The process dies by SIGKILL, exactly like ``kill -9``.
"""

from __future__ import annotations

from streams._faults import arm, armed, crashpoint

__all__ = ["arm", "armed", "crashpoint"]
