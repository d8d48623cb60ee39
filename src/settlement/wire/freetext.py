"""Free text as the wire models receive it: whatever a person or a hospital's system typed is stored with its ID
numbers masked (settlement.domain.privacy.mask_id_numbers), so no path that stores a request can forget it."""

from __future__ import annotations

from typing import Annotated

from pydantic import AfterValidator

from settlement.domain.privacy import mask_id_numbers

# Masking never lengthens a text, so the fields' length limits hold for what is stored too.
FreeText = Annotated[str, AfterValidator(mask_id_numbers)]
