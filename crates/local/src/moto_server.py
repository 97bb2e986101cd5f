"""moto's server, as the pinned `moto_server` starts it, with two costs
taken out of every request. Passed to the virtualenv's Python by
`porter_local::moto`, with `moto_server`'s own arguments.

- moto's dispatcher lists its own package folder (a `listdir`, then a
  `stat` per service, some 250) on every request, to see whether the host
  names a service, and does it under the lock all requests share. The
  folder does not change while moto runs: listed once here.
- werkzeug logs a line per request; the local stack sends moto's output
  to /dev/null, so the formatting and the handler's lock buy nothing.
"""

import logging
import sys

from moto import backends

MODULES = tuple(backends.list_of_moto_modules())
backends.list_of_moto_modules = lambda: MODULES
logging.getLogger("werkzeug").setLevel(logging.WARNING)

from moto.server import main  # noqa: E402  (after the patch, as its users import it)

sys.exit(main(sys.argv[1:]))
