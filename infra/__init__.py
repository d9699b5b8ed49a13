"""Platform plumbing: the embedded PostgreSQL and Temporal processes, database and namespace setup,
and the one Temporal client factory every process uses. No product logic lives here."""
