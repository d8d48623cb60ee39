"""The service end to end on both databases: settle, replay, reverse, read."""

from __future__ import annotations

from tests.service.conftest import LiveServer, Service, claim_body, import_roster_rows, new_id_number


def test_settle_replay_reverse_read(service: Service, live: LiveServer) -> None:
    code, key = service.hospital("county")
    person = new_id_number()
    import_roster_rows(service, [(person, "dibao_rural_a", "2024-01-01", "")])
    body = {"transaction_id": "T-1", "claim": claim_body(code, "county", person)}
    with live.client(key) as client:
        first = client.post("/v1/settlements", json=body)
        assert first.status_code == 201, first.text
        data = first.json()
        assert data["categories"] == ["dibao_rural_a"]
        # Basic (1,000 - 400) x 75% = 450.00; assistance (低保, no deductible) 550.00 x 70% = 385.00.
        paid = {p["fund"]: p["paid"] for p in data["payers"] if p["eligible"]}
        assert paid["390100"] == "450.00" and paid["610100"] == "385.00"
        assert data["patient_pays"] == "165.00"
        again = client.post("/v1/settlements", json=body)
        assert again.status_code == 201 and again.text == first.text
        assert again.headers["idempotent-replayed"] == "true"
        reversal = client.post(f"/v1/settlements/{data['settlement_id']}/reversal", json={"transaction_id": "T-2"})
        assert reversal.status_code == 201, reversal.text
        read = client.get(f"/v1/settlements/{data['settlement_id']}")
        assert read.json()["status"] == "reversed"
        eligibility = client.post("/v1/eligibility", json={"id_number": person, "on": "2024-06-15"})
        assert eligibility.json()["year_to_date"]["paid"] == {"390100": "0.00", "390200": "0.00", "610100": "0.00"}
