"""The alphabet of patient and practitioner references, a domain rule every face applies.

References are opaque ids chosen by the practice (``pat-0042``,
``rpps:10003456789``): 1-128 letters, digits and ``. _ : @ / + -``, which
keeps names and free text out. A value shaped like a French social security
number (NIR) is refused: it is a direct identifier, not a reference.
"""

from __future__ import annotations

import re

IDENTIFIER = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:@/+-]{0,127}$")
NIR_LIKE = re.compile(r"^[12]\s?\d{2}\s?\d{2}\s?\d{2}\s?\d{3}\s?\d{3}(\s?\d{2})?$")
