"""The database shared by the review service and the PACS bridge (SQLAlchemy 2 + Alembic).

:func:`open_store` opens SQLite (WAL) in the data folder by default, or any SQLAlchemy URL
(``postgresql+psycopg://...``), and brings the schema up to date with the migrations shipped in
this package before anything else touches it.
"""

from spinedx.store.database import Store, open_store
from spinedx.store.models import Base, PacsStudy, Review, Study

__all__ = ["Base", "PacsStudy", "Review", "Store", "Study", "open_store"]
