"""The backfill job type: DIDs in, every record of their repositories out.

Called, this package is the Python API's `skyfill.backfill(...)` (skyfill.api.jobs): see
`skyfill.CallablePackage`.
"""

import sys

from skyfill import CallablePackage

sys.modules[__name__].__class__ = CallablePackage
