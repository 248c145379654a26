"""The read side, one module per audience, each owning the SQL of what it reads and declaring
(projections.queries.freshness.query) which projections each query needs fresh:

- management: the management API and the CLI (usage pages, keys' last use and meters,
  accounts, webhook endpoints and deliveries);
- dashboard: the dashboard's figures (spend history, the usage page);
- forensics: the security team's and the audit's reads (flags, a key's uses, finding a key,
  the money the usage projection recorded);
- holds: the reconciler's open holds.

The key table has one reader, projections.lookup (the gateway's lookup reads it directly and
never waits: commands that change access wait for it instead). Callers ask through a ReadSide
(`runtime.reads.ask(query, …)`) and never catch projections up themselves.
"""
