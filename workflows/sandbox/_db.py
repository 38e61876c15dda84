"""Storage of the RentVine API sandbox (a local stand-in, not RentVine): SQLite through SQLAlchemy 2.0.

Records that are read before anyone created them are made up on the spot, deterministically from their
id (an address from a hash of the property id, and so on; lease dates also from the current month), so
any id a fixture or a test uses works and reads the same wherever it is first read. Every operation runs
under one lock: the sandbox is one process per database file, and serialising its few writes is simpler
and safer than SQLite's lock upgrades between threads.
"""

from __future__ import annotations

import hashlib
import threading
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any, Final, TypeVar

from sqlalchemy import Date, DateTime, Engine, ForeignKey, Integer, String, select
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, sessionmaker

__all__ = [
    "WORK_ORDER_STATUSES",
    "Change",
    "LedgerEntry",
    "Notification",
    "SandboxStore",
    "add_months",
    "cents",
    "money",
]

_T = TypeVar("_T")

WORK_ORDER_STATUSES: Final = ("open", "scheduled", "in_progress", "completed", "cancelled")
# fmt: off
_STREETS: Final = (
    "Maple Avenue", "Oak Street", "Cedar Lane", "Birch Road", "Willow Way", "Elm Street", "Lakeview Drive",
    "Pine Court", "Sycamore Boulevard", "Highland Avenue", "Magnolia Drive", "Ridge Road",
)
_CITIES: Final = (
    ("Austin", "TX", "787"), ("Denver", "CO", "802"), ("Raleigh", "NC", "276"), ("Phoenix", "AZ", "850"),
    ("Columbus", "OH", "432"), ("Nashville", "TN", "372"), ("Tampa", "FL", "336"), ("Boise", "ID", "837"),
)
# fmt: on
_PROPERTY_TYPES: Final = ("single_family", "multi_family", "condo", "townhouse")
_BUILDING_NAMES: Final = ("Commons", "Apartments", "Terrace", "Residences", "Gardens", "Flats")
_CATEGORIES: Final = {
    "plumbing": ("Kitchen sink drains slowly", "Leaking faucet in the bathroom", "Toilet keeps running"),
    "electrical": ("Outlet in the living room is dead", "Hallway light flickers", "Breaker trips often"),
    "hvac": ("Air conditioner blows warm air", "Furnace makes a rattling noise", "Thermostat unresponsive"),
    "appliance": ("Dishwasher does not drain", "Refrigerator not cooling", "Dryer takes two cycles"),
    "pest_control": ("Ants in the kitchen", "Mice seen in the garage", "Wasp nest by the front door"),
    "general": ("Front door lock sticks", "Window screen torn", "Closet door off its track"),
}
_VENDORS: Final = {
    "plumbing": "Rapid Rooter Plumbing",
    "electrical": "Bright Spark Electric",
    "hvac": "Comfort Air Services",
    "appliance": "Appliance Doctors",
    "pest_control": "Green Shield Pest Control",
    "water_leak": "Rapid Rooter Plumbing",
}


class _Base(DeclarativeBase):
    def as_dict(self) -> dict[str, Any]:
        """The row as JSON: ISO dates (UTC ``Z``), money as two-place strings, no idempotency keys."""
        out: dict[str, Any] = {}
        for column in self.__table__.columns:
            key, value = column.key, getattr(self, column.key)
            if key == "idempotency_key" or (key == "currency" and "rent_cents" in self.__table__.columns):
                continue
            if key == "rent_cents":
                out["monthly_rent"] = {"amount": money(value), "currency": getattr(self, "currency", "USD")}
            elif key == "amount_cents":
                out["amount"] = money(value)
            elif isinstance(value, datetime):
                out[key] = value.isoformat() + "Z"
            elif isinstance(value, date):
                out[key] = value.isoformat()
            else:
                out[key] = value
        return out


class Property(_Base):
    """A rental property."""

    __tablename__ = "properties"
    property_id: Mapped[str] = mapped_column(String(200), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    street: Mapped[str] = mapped_column(String(200))
    city: Mapped[str] = mapped_column(String(100))
    state: Mapped[str] = mapped_column(String(2))
    postal_code: Mapped[str] = mapped_column(String(10))
    property_type: Mapped[str] = mapped_column(String(20))
    unit_count: Mapped[int] = mapped_column(Integer)
    year_built: Mapped[int] = mapped_column(Integer)
    owner_id: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(DateTime)


class WorkOrder(_Base):
    """A maintenance request on a property."""

    __tablename__ = "work_orders"
    work_order_id: Mapped[str] = mapped_column(String(200), primary_key=True)
    property_id: Mapped[str] = mapped_column(ForeignKey("properties.property_id"), index=True)
    unit_id: Mapped[str | None] = mapped_column(String(200))
    status: Mapped[str] = mapped_column(String(20))
    priority: Mapped[str] = mapped_column(String(20))
    category: Mapped[str] = mapped_column(String(50))
    description: Mapped[str] = mapped_column(String(2000))
    vendor_id: Mapped[str | None] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(DateTime)
    updated_at: Mapped[datetime] = mapped_column(DateTime)


class Lease(_Base):
    """A tenant's lease of a unit."""

    __tablename__ = "leases"
    lease_id: Mapped[str] = mapped_column(String(200), primary_key=True)
    property_id: Mapped[str] = mapped_column(ForeignKey("properties.property_id"), index=True)
    unit_id: Mapped[str] = mapped_column(String(200))
    tenant_id: Mapped[str] = mapped_column(String(200))
    start_date: Mapped[date] = mapped_column(Date)
    end_date: Mapped[date] = mapped_column(Date)
    rent_cents: Mapped[int] = mapped_column(Integer)
    currency: Mapped[str] = mapped_column(String(3))
    status: Mapped[str] = mapped_column(String(20))
    updated_at: Mapped[datetime] = mapped_column(DateTime)


class RenewalOffer(_Base):
    """An offer to renew a lease for some months at a rent."""

    __tablename__ = "renewal_offers"
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    lease_id: Mapped[str] = mapped_column(ForeignKey("leases.lease_id"), index=True)
    months: Mapped[int] = mapped_column(Integer)
    rent_cents: Mapped[int] = mapped_column(Integer)
    proposed_end_date: Mapped[date] = mapped_column(Date)
    status: Mapped[str] = mapped_column(String(20))
    idempotency_key: Mapped[str | None] = mapped_column(String(200), unique=True)
    created_at: Mapped[datetime] = mapped_column(DateTime)


class Payment(_Base):
    """A rent payment on a lease."""

    __tablename__ = "payments"
    payment_id: Mapped[str] = mapped_column(String(200), primary_key=True)
    lease_id: Mapped[str] = mapped_column(ForeignKey("leases.lease_id"), index=True)
    amount_cents: Mapped[int] = mapped_column(Integer)
    currency: Mapped[str] = mapped_column(String(3))
    method: Mapped[str] = mapped_column(String(20))
    status: Mapped[str] = mapped_column(String(20))
    received_at: Mapped[datetime] = mapped_column(DateTime)


class LedgerEntry(_Base):
    """A line in the owner's ledger, usually reconciling a payment."""

    __tablename__ = "ledger_entries"
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    payment_id: Mapped[str] = mapped_column(String(200), index=True)
    amount_cents: Mapped[int] = mapped_column(Integer)
    currency: Mapped[str] = mapped_column(String(3))
    kind: Mapped[str] = mapped_column(String(50))
    idempotency_key: Mapped[str | None] = mapped_column(String(200), unique=True)
    created_at: Mapped[datetime] = mapped_column(DateTime)


class Notification(_Base):
    """A message sent to a tenant, owner or vendor."""

    __tablename__ = "notifications"
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    kind: Mapped[str] = mapped_column(String(100))
    recipient: Mapped[str] = mapped_column(String(320))
    subject: Mapped[str] = mapped_column(String(500))
    event_id: Mapped[str | None] = mapped_column(String(200), index=True)
    idempotency_key: Mapped[str | None] = mapped_column(String(200), unique=True)
    created_at: Mapped[datetime] = mapped_column(DateTime)


_R = TypeVar("_R", bound=_Base)
_Keyed = TypeVar("_Keyed", RenewalOffer, LedgerEntry, Notification)


class _Seed:
    """Deterministic choices derived from one entity's id."""

    def __init__(self, kind: str, entity_id: str) -> None:
        self._digest = hashlib.sha256(f"{kind}:{entity_id}".encode()).digest()

    def number(self, slot: int, low: int, high: int) -> int:
        value = int.from_bytes(self._digest[2 * slot : 2 * slot + 2], "big")
        return low + value % (high - low + 1)

    def pick(self, slot: int, options: Sequence[_T]) -> _T:
        return options[self.number(slot, 0, len(options) - 1)]


def _now() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None, microsecond=0)


def _new_id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex}"


def cents(amount: Decimal) -> int:
    """An amount of money (two decimal places at most) as integer cents."""
    return int((amount * 100).to_integral_value())


def money(amount_cents: int) -> str:
    """Integer cents as a decimal string with two places, e.g. ``"1850.00"``."""
    return f"{Decimal(amount_cents) / 100:.2f}"


def add_months(start: date, months: int) -> date:
    """The same day ``months`` later, clamped to that month's last day."""
    index = start.month - 1 + months
    year, month = start.year + index // 12, index % 12 + 1
    day = start.day
    while True:
        try:
            return date(year, month, day)
        except ValueError:
            day -= 1


@dataclass(frozen=True, slots=True)
class Change:
    """A record after a write, and whether the write changed or created anything."""

    record: dict[str, Any]
    changed: bool


class SandboxStore:
    """The sandbox's records, made up on first read, handed out as JSON-ready dicts.

    Args:
        engine: a SQLAlchemy engine on the SQLite file (the caller instruments it).
    """

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._sessions = sessionmaker(engine, expire_on_commit=False)
        self._lock = threading.Lock()

    def create_schema(self) -> None:
        """Create the tables that do not exist yet."""
        _Base.metadata.create_all(self.engine)

    @contextmanager
    def _session(self) -> Iterator[Session]:
        with self._lock, self._sessions.begin() as session:
            yield session

    @staticmethod
    def _get_or_make(session: Session, model: type[_R], key: str, make: Callable[[], _R]) -> _R:
        row = session.get(model, key)
        if row is None:
            row = make()
            session.add(row)
            session.flush()
        return row

    @staticmethod
    def _by_key(session: Session, model: type[_Keyed], idempotency_key: str | None) -> _Keyed | None:
        if idempotency_key is None:
            return None
        return session.scalars(select(model).where(model.idempotency_key == idempotency_key)).first()

    def _add(self, session: Session, row: _R) -> _R:
        session.add(row)
        session.flush()
        return row

    def _property(self, session: Session, property_id: str) -> Property:
        def make() -> Property:
            seed = _Seed("property", property_id)
            street, (city, state, zip_prefix) = seed.pick(1, _STREETS), seed.pick(2, _CITIES)
            kind, number = seed.pick(3, _PROPERTY_TYPES), seed.number(0, 100, 9899)
            units = {"multi_family": seed.number(4, 4, 48), "townhouse": seed.number(4, 2, 4)}.get(kind, 1)
            return Property(
                property_id=property_id,
                name=f"{street.split()[0]} {seed.pick(5, _BUILDING_NAMES)}"
                if units > 4
                else f"{number} {street}",
                street=f"{number} {street}",
                city=city,
                state=state,
                postal_code=f"{zip_prefix}{seed.number(6, 1, 99):02d}",
                property_type=kind,
                unit_count=units,
                year_built=seed.number(7, 1925, 2022),
                owner_id=f"own_{seed.number(8, 100, 999)}",
                created_at=_now(),
            )

        return self._get_or_make(session, Property, property_id, make)

    def property(self, property_id: str) -> dict[str, Any]:
        """The property, made up from its id on first read; its address is one nested object."""
        with self._session() as session:
            record = self._property(session, property_id).as_dict()
        record["address"] = {key: record.pop(key) for key in ("street", "city", "state", "postal_code")}
        return record

    def _work_order(self, session: Session, work_order_id: str, property_id: str | None) -> WorkOrder:
        def make() -> WorkOrder:
            seed = _Seed("work_order", work_order_id)
            category, now = seed.pick(1, list(_CATEGORIES)), _now()
            return WorkOrder(
                work_order_id=work_order_id,
                property_id=self._property(
                    session, property_id or f"prop_{seed.number(0, 100, 999)}"
                ).property_id,
                unit_id=f"unit_{seed.number(2, 1, 40)}{seed.pick(3, 'ABCD')}",
                status=seed.pick(4, WORK_ORDER_STATUSES[:3]),
                priority=seed.pick(5, ("low", "normal", "normal", "high")),
                category=category,
                description=seed.pick(6, _CATEGORIES[category]),
                vendor_id=None,
                created_at=now,
                updated_at=now,
            )

        return self._get_or_make(session, WorkOrder, work_order_id, make)

    def work_order(self, work_order_id: str, property_id: str | None = None) -> dict[str, Any]:
        """The work order, made up from its id on first read (on ``property_id`` when given)."""
        with self._session() as session:
            return self._work_order(session, work_order_id, property_id).as_dict()

    def create_work_order(self, fields: dict[str, Any]) -> Change:
        """Create a work order; one that exists already is returned unchanged (``changed`` False)."""
        with self._session() as session:
            existing = session.get(WorkOrder, fields["work_order_id"])
            if existing is not None:
                return Change(existing.as_dict(), changed=False)
            self._property(session, fields["property_id"])
            now = _now()
            row = self._add(session, WorkOrder(**fields, vendor_id=None, created_at=now, updated_at=now))
            return Change(row.as_dict(), changed=True)

    def update_work_order(self, work_order_id: str, status: str, property_id: str | None) -> Change:
        """Set the status (and the property, when given); ``changed`` says whether anything differs."""
        with self._session() as session:
            row = self._work_order(session, work_order_id, property_id)
            changed = row.status != status or property_id not in (None, row.property_id)
            if changed:
                if property_id is not None:
                    row.property_id = self._property(session, property_id).property_id
                row.status, row.updated_at = status, _now()
            return Change(row.as_dict(), changed=changed)

    def assign_vendor(self, work_order_id: str, category: str | None) -> Change:
        """Pick the vendor of the trade near the property; an open work order becomes scheduled."""
        with self._session() as session:
            row = self._work_order(session, work_order_id, None)
            trade = category or row.category
            vendor_id = f"ven_{_Seed('vendor', f'{trade}:{row.property_id}').number(0, 100, 999)}"
            changed = row.vendor_id != vendor_id
            if changed:
                row.vendor_id, row.updated_at = vendor_id, _now()
                row.status = "scheduled" if row.status == "open" else row.status
            record = row.as_dict()
        record["vendor_name"] = _VENDORS.get(trade, "Handy Property Services")
        return Change(record, changed=changed)

    def _lease(
        self, session: Session, lease_id: str, property_id: str | None, tenant_id: str | None
    ) -> Lease:
        def make() -> Lease:
            seed = _Seed("lease", lease_id)
            # A year-long lease ending within six months of this month: current, and soon up for renewal.
            start = add_months(_now().date().replace(day=1), -12) + timedelta(days=seed.number(0, 1, 180))
            return Lease(
                lease_id=lease_id,
                property_id=self._property(
                    session, property_id or f"prop_{seed.number(1, 100, 999)}"
                ).property_id,
                unit_id=f"unit_{seed.number(2, 1, 40)}{seed.pick(3, 'ABCD')}",
                tenant_id=tenant_id or f"ten_{seed.number(4, 1000, 9999)}",
                start_date=start,
                end_date=add_months(start, 12) - timedelta(days=1),
                rent_cents=(1100 + 25 * seed.number(5, 0, 80)) * 100,
                currency="USD",
                status="active",
                updated_at=_now(),
            )

        return self._get_or_make(session, Lease, lease_id, make)

    def lease(
        self, lease_id: str, property_id: str | None = None, tenant_id: str | None = None
    ) -> dict[str, Any]:
        """The lease, made up from its id on first read (on the property and tenant when given)."""
        with self._session() as session:
            return self._lease(session, lease_id, property_id, tenant_id).as_dict()

    def update_lease(
        self, lease_id: str, end_date: date, rent_cents: int | None
    ) -> tuple[Change, date | None]:
        """Set the end date (and the rent); returns the change and the previous end date if that moved."""
        with self._session() as session:
            row = self._lease(session, lease_id, None, None)
            previous = row.end_date if row.end_date != end_date else None
            changed = previous is not None or rent_cents not in (None, row.rent_cents)
            if changed:
                row.end_date, row.updated_at = end_date, _now()
                row.rent_cents = row.rent_cents if rent_cents is None else rent_cents
            return Change(row.as_dict(), changed=changed), previous

    def create_renewal_offer(
        self, lease_id: str, months: int, rent_cents: int, idempotency_key: str | None
    ) -> Change:
        """Offer a renewal; ``changed`` is False when the same Idempotency-Key was seen before."""
        with self._session() as session:
            row = self._by_key(session, RenewalOffer, idempotency_key)
            if row is not None:
                return Change(row.as_dict(), changed=False)
            lease = self._lease(session, lease_id, None, None)
            row = RenewalOffer(
                id=_new_id("rof"),
                lease_id=lease.lease_id,
                months=months,
                rent_cents=rent_cents,
                proposed_end_date=add_months(lease.end_date, months),
                status="offered",
                idempotency_key=idempotency_key,
                created_at=_now(),
            )
            return Change(self._add(session, row).as_dict(), changed=True)

    def payment(self, payment_id: str, lease_id: str | None = None) -> dict[str, Any]:
        """The payment, made up from its id on first read: the lease's rent (``lease_id`` when given)."""
        with self._session() as session:

            def make() -> Payment:
                seed = _Seed("payment", payment_id)
                lease = self._lease(session, lease_id or f"lease_{seed.number(0, 5000, 5999)}", None, None)
                return Payment(
                    payment_id=payment_id,
                    lease_id=lease.lease_id,
                    amount_cents=lease.rent_cents,
                    currency=lease.currency,
                    method=seed.pick(1, ("ach", "card", "ach", "check")),
                    status="succeeded",
                    received_at=_now(),
                )

            return self._get_or_make(session, Payment, payment_id, make).as_dict()

    def create_ledger_entry(self, fields: dict[str, Any], idempotency_key: str | None) -> Change:
        """Record a ledger entry; ``changed`` is False when the same Idempotency-Key was seen before."""
        with self._session() as session:
            row = self._by_key(session, LedgerEntry, idempotency_key)
            if row is None:
                new = LedgerEntry(
                    id=_new_id("led"), idempotency_key=idempotency_key, created_at=_now(), **fields
                )
                return Change(self._add(session, new).as_dict(), changed=True)
            return Change(row.as_dict(), changed=False)

    def create_notification(self, fields: dict[str, Any], idempotency_key: str | None) -> Change:
        """Store a notification; ``changed`` is False when the same Idempotency-Key was seen before."""
        with self._session() as session:
            row = self._by_key(session, Notification, idempotency_key)
            if row is None:
                new = Notification(
                    id=_new_id("ntf"), idempotency_key=idempotency_key, created_at=_now(), **fields
                )
                return Change(self._add(session, new).as_dict(), changed=True)
            return Change(row.as_dict(), changed=False)

    def list_rows(self, model: type[LedgerEntry | Notification], **equal: str | None) -> list[dict[str, Any]]:
        """Rows of a table, oldest first (at most 500), filtered by the given columns when not None."""
        with self._session() as session:
            query = select(model).order_by(model.created_at, model.id).limit(500)
            for column, value in equal.items():
                if value is not None:
                    query = query.where(getattr(model, column) == value)
            return [row.as_dict() for row in session.scalars(query)]
