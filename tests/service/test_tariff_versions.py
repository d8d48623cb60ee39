"""Two workers recording the same tariff version at once: the loser uses the winner's row, never a 500."""

from __future__ import annotations

import pytest

from settlement.db.repositories import Repository
from settlement.domain.errors import SettlementError
from settlement.services.auth import authenticate
from settlement.services.settlements import SettlementService
from settlement.wire.requests import SettleRequest
from tests.service.conftest import Service, claim_body, new_id_number


def test_a_version_recorded_by_another_worker_in_between_is_reused(service: Service,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    code, key = service.hospital("county")
    with service.app.context.uow() as tx:
        caller = authenticate(tx.repo, key)
    service.app.context.tariff_ids.clear()
    # The version is in the table (prepare recorded it), but this worker's lookup by hash ran before the other
    # worker committed: the planted race the lookup by name must absorb.
    monkeypatch.setattr(Repository, "tariff_version_by_sha", lambda self, sha: None)
    reply = SettlementService(service.app.context).settle(caller, SettleRequest.model_validate(
        {"transaction_id": "T-race", "claim": claim_body(code, "county", new_id_number())}))
    assert reply.status == 201, reply.body


def test_an_edited_version_is_refused_with_a_stable_code(service: Service, monkeypatch: pytest.MonkeyPatch) -> None:
    code, key = service.hospital("county")
    with service.app.context.uow() as tx:
        caller = authenticate(tx.repo, key)
    service.app.context.tariff_ids.clear()
    monkeypatch.setattr(Repository, "tariff_version_by_sha", lambda self, sha: None)
    resolve = service.app.context.tariffs.resolve

    def edited(region: str, day: object) -> object:
        resolved = resolve(region, day)  # type: ignore[arg-type]
        ref = resolved.tariff.ref.__class__(resolved.tariff.ref.region, resolved.tariff.ref.version, "f" * 64)
        tariff = resolved.tariff.__class__(ref, resolved.tariff.name, resolved.tariff.effective_from,
                                           resolved.tariff.effective_to, resolved.tariff.catalogue,
                                           resolved.tariff.layers)
        return resolved.__class__(tariff, resolved.document, resolved.canonical, resolved.files)

    monkeypatch.setattr(service.app.context.tariffs, "resolve", edited)
    with pytest.raises(SettlementError) as caught:  # an operator's fault (the API answers 500), not kept
        SettlementService(service.app.context).settle(caller, SettleRequest.model_validate(
            {"transaction_id": "T-edit", "claim": claim_body(code, "county", new_id_number())}))
    assert caught.value.code == "TARIFF_INVALID"
