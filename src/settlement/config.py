"""Typed settings, read once from the environment (prefix SETTLEMENT_) by the composition root."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from settlement.paths import default_adapters_dir, default_payers_file, default_tariffs_dir


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="SETTLEMENT_", env_file=None, extra="ignore")

    # The embedded default: a SQLite file under ./var, created with its schema on first start.
    database_url: str = "sqlite:///var/settlement.sqlite3"
    host: str = "127.0.0.1"
    port: int = 8000
    workers: int = 1
    tariffs_dir: Path = Field(default_factory=default_tariffs_dir)
    # Signs quote ids (a quote records nothing, so its id carries what it was computed on). When empty, a key
    # is generated on first start and kept in data_dir/secret.key.
    secret_key: str = ""
    data_dir: Path = Path("var")
    quote_ttl_seconds: int = 15 * 60
    # A claim dated after the settlement time (the service's clock) by more than this is refused
    # (CLAIM_DATE_IN_FUTURE): the hospital's clock may run a little ahead, a bill from next year may not.
    claim_clock_skew_seconds: int = Field(default=300, ge=0, le=86400)
    # Seeds a demo hospital, its key and a demo roster into an empty database (the README's run command).
    demo: bool = False
    db_pool_size: int = 20
    # A REST request's body is refused (413 BODY_TOO_LARGE) past this many bytes, before it is held in memory; the
    # admin uploads have limits of their own (their files' limits plus room for the multipart framing), SOAP too.
    max_body_bytes: int = 1024 * 1024
    lock_timeout_ms: int = 5000  # waiting for one person's accumulators longer than this answers 503
    # Deadlines, so that a stalled database is a 503 within seconds, never a request hanging as long as it stalls:
    # connecting (libpq connect_timeout), a statement (PostgreSQL statement_timeout; 0: none), a hospital's whole
    # request (REST cashier routes and SOAP; then 503 DATABASE_UNAVAILABLE, outcome unknown) and readiness.
    db_connect_timeout_seconds: int = 5
    statement_timeout_ms: int = 60_000
    request_deadline_seconds: float = 10.0
    ready_deadline_seconds: float = 2.0
    # SOAP: the hospital dialects, the body limits, and the WS-Security window (created time and nonce memory).
    adapters_dir: Path = Field(default_factory=default_adapters_dir)
    soap_max_body_bytes: int = 1024 * 1024  # before and after inflating a compressed body
    soap_max_depth: int = 48
    # On PostgreSQL, a message larger than this is parsed, mapped and answered in threads, off the event loop.
    soap_offload_bytes: int = 64 * 1024
    wsse_window_seconds: int = 300
    # The SOAP envelope log: each envelope kept up to this many characters (a refused message: its first 256), and
    # rows kept this many days (`settlement soap purge-exchanges`, nightly in the scheduler; at least 30).
    soap_log_max_chars: int = 64 * 1024
    soap_exchange_retention_days: int = 180
    # The address the WSDLs give (e.g. https://settlement.example.gov.cn; empty: http://HOST:PORT), and the host
    # names whose Host header a WSDL may follow instead (comma-separated; `name` any port, `name:port` one).
    public_url: str = ""
    allowed_hosts: str = ""
    # Encrypts hospitals' WS-Security passwords (a Fernet key). When empty, one is generated on first start and
    # kept in data_dir/credentials.key; keep that file (or this setting) apart from database backups.
    credentials_key: str = ""
    # Reconciliation: the payers, where file statements arrive and where reports are written.
    payers_file: Path = Field(default_factory=default_payers_file)
    inbox_dir: Path = Path("var/inbox")
    reports_dir: Path = Path("var/reports")
    # An engine-only entry this close to midnight is flagged as a likely cross-midnight timing difference.
    timing_window_seconds: int = 600
    # The scheduler: nightly reconciliation time (Asia/Shanghai) and how far back missed runs are caught up.
    reconcile_at: str = "02:00"
    catch_up_days: int = 7
    # Leases: a reconciliation run, and the scheduler (one leads of several on a database), are held by a process
    # that renews its lease every sixth of this; one not renewed for this long is taken over by the next process.
    lease_seconds: int = 30

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")
