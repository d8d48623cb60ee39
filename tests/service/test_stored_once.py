"""A settlement's reply is stored once, as the settlement's result: the key's record points at it. Retries get it
byte for byte; records written before (with a copy of the reply) still answer with their copy; on PostgreSQL the
large documents are compressed with lz4 (migration 0006)."""

from __future__ import annotations

from sqlalchemy import text

from tests.service.conftest import LiveServer, Service, claim_body, new_id_number, serving


def record_of(service: Service, key: str) -> tuple[str, str]:
    with service.app.engine.connect() as connection:
        row = connection.execute(text(
            "SELECT r.response, s.result FROM idempotency_records r JOIN settlements s "
            "ON s.hospital_id = r.hospital_id AND s.transaction_id = r.key WHERE r.key = :k"), {"k": key}).one()
    return str(row[0]), str(row[1])


def test_the_key_points_at_the_settlement_and_a_retry_gets_its_reply(service: Service, live: LiveServer) -> None:
    code, key = service.hospital()
    body = {"transaction_id": "ONCE-1", "claim": claim_body(code, "county", new_id_number())}
    with live.client(key) as client:
        first = client.post("/v1/settlements", json=body)
        again = client.post("/v1/settlements", json=body)
    assert first.status_code == again.status_code == 201
    assert again.headers["idempotent-replayed"] == "true"
    assert again.content == first.content
    response, result = record_of(service, "ONCE-1")
    assert response == "" and result.encode("utf-8") == first.content


def test_a_record_that_kept_its_own_copy_answers_with_it(service: Service, live: LiveServer) -> None:
    """Keys recorded before this revision hold the reply themselves; they are replayed from that copy. (The copy is
    made different here, so that a replay from the settlement instead would be seen.)"""
    code, key = service.hospital()
    body = {"transaction_id": "COPY-1", "claim": claim_body(code, "county", new_id_number())}
    with live.client(key) as client:
        first = client.post("/v1/settlements", json=body)
        assert first.status_code == 201
        copy = first.text.replace('"status":"settled"', '"status":"settled","copy":true')
        with service.app.engine.begin() as connection:
            connection.execute(text("UPDATE idempotency_records SET response = :r WHERE key = 'COPY-1'"), {"r": copy})
        again = client.post("/v1/settlements", json=body)
    assert again.status_code == 201 and again.text == copy


def test_postgresql_compresses_the_documents_with_lz4(pg_service: Service) -> None:
    service = pg_service
    code, key = service.hospital()
    lines = [{"id": str(n), "code": "XJ01CAA010A001010101107", "name": "阿莫西林胶囊", "quantity": "1",
              "unit_price": "10.00", "amount": "10.00"} for n in range(1, 25)]
    body = {"transaction_id": "LZ4-1", "claim": claim_body(code, "county", new_id_number(), lines=lines)}
    with serving(service.app) as live, live.client(key) as client:
        assert client.post("/v1/settlements", json=body).status_code == 201
    with service.app.engine.connect() as connection:
        methods: dict[str, str] = dict(connection.execute(text(
            "SELECT attname, attcompression FROM pg_attribute WHERE attrelid = 'settlements'::regclass "
            "AND attname IN ('claim', 'result')")).all())
        stored = connection.execute(text(
            "SELECT pg_column_compression(result) FROM settlements WHERE transaction_id = 'LZ4-1'")).scalar_one()
    assert methods == {"claim": "l", "result": "l"}
    assert stored == "lz4"
